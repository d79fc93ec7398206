package assets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-retryablehttp"
	"go.uber.org/zap"
)

// Defaults for UploaderOptions' zero in-call retry fields (not configuration keys).
const (
	DefaultRetryMax     = 2 // quick in-call retries after the first try
	DefaultRetryWaitMin = 200 * time.Millisecond
	DefaultRetryWaitMax = 2 * time.Second
)

// Upload stages, as found in Result.Stage and StatusError.Stage.
const (
	StageHandshake = "handshake"
	StageUpload    = "upload"
)

const (
	maxAnswerBytes  = 64 << 10 // a stage-1 answer is a few hundred bytes
	maxExcerptBytes = 512      // Result.Body
)

// UploaderOptions configures an Uploader.
type UploaderOptions struct {
	// Endpoint is the stage-1 URL, asset_upload_endpoint. Required.
	Endpoint string
	// Session holds the tokens sent with each request. Required.
	Session *SessionHolder
	// ConnectTimeout bounds dialing and the TLS handshake of the default
	// transport (connect_timeout_seconds); 0 means no bound. Unused with
	// Transport.
	ConnectTimeout time.Duration
	// RequestTimeout is the longest a try may go without progress (a body
	// byte sent, an answer, a byte of it received) before it fails as a
	// timeout (request_timeout_seconds); 0 means no bound. It is not a limit
	// on the whole try, so a 200 MB upload on a slow but moving link is not
	// cut off.
	RequestTimeout time.Duration
	// RetryMax is the number of quick in-call retries after the first try of
	// each request, for transient outcomes only; 0 means DefaultRetryMax,
	// a negative value none.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the jittered wait between in-call
	// tries; 0 means DefaultRetryWaitMin, DefaultRetryWaitMax. A Retry-After
	// longer than RetryWaitMax ends the call instead, with Result.RetryAfter
	// set, so the caller schedules the next attempt.
	RetryWaitMin, RetryWaitMax time.Duration
	// Transport sends the requests; nil means a transport with
	// ConnectTimeout that trusts the system roots.
	Transport http.RoundTripper
	// Logger receives debug lines; nil means zap.NewNop(). No token is ever
	// logged.
	Logger *zap.Logger
}

// Uploader uploads assets through the two-stage API of SPEC §5. It is safe
// for concurrent use.
type Uploader struct {
	endpoint *url.URL
	origin   string
	session  *SessionHolder
	client   *retryablehttp.Client
	retryMax int
	waitMin  time.Duration
	waitMax  time.Duration
	log      *zap.Logger
}

// NewUploader checks o and builds an Uploader.
func NewUploader(o UploaderOptions) (*Uploader, error) {
	ep, err := parseEndpoint(o.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("parse upload endpoint: %w", err)
	}
	if o.Session == nil {
		return nil, errors.New("new uploader: no session holder")
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	tr := o.Transport
	if tr == nil {
		tr = newDefaultTransport(o.ConnectTimeout)
	}
	if o.RequestTimeout > 0 {
		tr = &stallTransport{next: tr, timeout: o.RequestTimeout}
	}
	retryMax := o.RetryMax
	switch {
	case retryMax == 0:
		retryMax = DefaultRetryMax
	case retryMax < 0:
		retryMax = 0
	}
	waitMin := orDefault(o.RetryWaitMin, DefaultRetryWaitMin)
	waitMax := max(orDefault(o.RetryWaitMax, DefaultRetryWaitMax), waitMin)

	u := &Uploader{
		endpoint: ep,
		origin:   origin(ep),
		session:  o.Session,
		retryMax: retryMax,
		waitMin:  waitMin,
		waitMax:  waitMax,
		log:      log,
	}
	u.client = &retryablehttp.Client{
		HTTPClient: &http.Client{
			Transport: tr,
			// A redirect would be a misconfigured endpoint; do not carry
			// the session's token anywhere the configuration did not name.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger:       retryLogger{log},
		RetryWaitMin: waitMin,
		RetryWaitMax: waitMax,
		RetryMax:     retryMax,
		CheckRetry:   u.checkRetry,
		Backoff:      jitteredBackoff,
		// Hand back the last response, not an error, so it is classified.
		ErrorHandler: func(resp *http.Response, err error, _ int) (*http.Response, error) {
			if resp != nil {
				return resp, nil
			}
			return nil, err
		},
	}
	return u, nil
}

// orDefault returns v, or def when v is not positive.
func orDefault(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func parseEndpoint(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return u, nil
}

// origin serialises u's origin as a browser does: scheme://host[:port],
// lower case, without the scheme's default port.
func origin(u *url.URL) string {
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" || (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		return scheme + "://" + host
	}
	return scheme + "://" + host + ":" + port
}

// checkRetry retries transient outcomes only, and not when the server asks
// for a wait longer than an in-call retry may take.
func (u *Uploader) checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	status := 0
	if err == nil && resp != nil {
		status = resp.StatusCode
	}
	if Classify(status, err) != Transient {
		return false, nil
	}
	if err != nil && ctx.Value(stageUploadKey{}) != nil {
		// Stage 2 sent (some of) the body and no answer came: the server may have stored the
		// asset, and it replaces what it has on a second upload. attempt starts again at
		// stage 1 instead, which answers 409 if it did.
		return false, nil
	}
	if resp != nil {
		if ra, ok := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok && ra > u.waitMax {
			return false, nil
		}
	}
	return true, nil
}

// stageUploadKey marks the context of a stage-2 request, for checkRetry.
type stageUploadKey struct{}

// Result is the outcome of one Upload.
type Result struct {
	Class  Class
	Status int    // the last HTTP status, 0 if no answer came
	Stage  string // StageHandshake or StageUpload where it ended; "" if nothing was sent
	// RetryAfter is the server's Retry-After on a transient answer, capped
	// at MaxRetryAfter; 0 if none.
	RetryAfter time.Duration
	// Reason is a short description for last_error and logs. It never holds
	// a token.
	Reason string
	// Body is an excerpt of the server's answer to a failed request, for
	// rejected entries. Any token the server echoed is redacted.
	Body string
	// Err is the underlying error: a *StatusError for an HTTP status,
	// ErrNoSession, ErrInvalidAsset, ErrUploadURL, ErrBadAnswer, or a
	// network error (URL queries redacted).
	Err error
}

func (r Result) String() string { return r.Class.String() + ": " + r.Reason }

// Upload sends a through both stages to the configured endpoint; see UploadTo.
func (u *Uploader) Upload(ctx context.Context, a Asset, body io.ReadSeeker) Result {
	return u.UploadTo(ctx, "", a, body)
}

// UploadTo sends a through both stages, the bytes streamed from body, which must hold
// exactly a.Size bytes from its start (it is rewound before each try). target is a pending
// entry's target_url: used when its origin is the configured endpoint's, else (or when
// empty) the configured endpoint is. Without a usable session it returns Auth and sends
// nothing. A 401 or 403 at stage 2 (an expired upload token) leads to one new handshake; a
// 401 for a session the proxy owns leads to one refresh and one more try.
func (u *Uploader) UploadTo(ctx context.Context, target string, a Asset, body io.ReadSeeker) Result {
	start := time.Now()
	res := u.upload(ctx, u.endpointFor(target), a, body)
	u.log.Debug("asset upload finished",
		zap.String("key", a.Key),
		zap.Stringer("class", res.Class),
		zap.Int("status", res.Status),
		zap.String("reason", res.Reason),
		zap.Duration("duration", time.Since(start)))
	return res
}

// endpointFor returns target when it is an http(s) URL of the configured endpoint's origin,
// else the configured endpoint: the session's tokens go only where the configuration said.
func (u *Uploader) endpointFor(target string) *url.URL {
	if target == "" {
		return u.endpoint
	}
	t, err := parseEndpoint(target)
	if err != nil || origin(t) != u.origin {
		return u.endpoint
	}
	return t
}

func (u *Uploader) upload(ctx context.Context, endpoint *url.URL, a Asset, body io.ReadSeeker) Result {
	if err := a.Validate(); err != nil {
		return Result{Class: Permanent, Reason: err.Error(), Err: err}
	}
	if body == nil {
		err := fmt.Errorf("%w: no body", ErrInvalidAsset)
		return Result{Class: Permanent, Reason: err.Error(), Err: err}
	}
	res, sess := u.attempt(ctx, endpoint, a, body)
	if res.Status == http.StatusUnauthorized && u.session.RefreshAfter401(ctx, sess) {
		res, _ = u.attempt(ctx, endpoint, a, body)
	}
	return res
}

// attempt runs both stages with the current session, redoing the handshake once when stage
// 2 refuses the upload token. It returns the outcome and the session it used.
func (u *Uploader) attempt(ctx context.Context, endpoint *url.URL, a Asset, body io.ReadSeeker) (Result, Session) {
	for redo := 0; ; redo++ {
		// Read the session afresh for the new handshake: one posted
		// meanwhile is the likeliest cure for a 401.
		sess, err := u.session.Usable(ctx)
		if err != nil {
			return Result{Class: Auth, Reason: err.Error(), Err: err}, sess
		}
		ans, res, done := u.handshake(ctx, endpoint, sess, a)
		if done {
			return res, sess
		}
		res = u.send(ctx, endpoint, sess, a, body, ans)
		switch {
		case res.Class == Auth && redo == 0:
			u.log.Debug("upload refused, redoing the handshake", zap.String("key", a.Key), zap.Int("status", res.Status))
			continue
		case res.Class == Transient && res.Status == 0 && redo < u.retryMax:
			// No answer to stage 2: the asset may be stored. Start again at stage 1, which
			// says 409 if it is, after the in-call retries' backoff.
			if !sleepCtx(ctx, jitteredBackoff(u.waitMin, u.waitMax, redo, nil)) {
				return res, sess
			}
			continue
		}
		return res, sess
	}
}

// sleepCtx waits for d, or until ctx ends (then it returns false).
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// handshakeRequest is the stage-1 body. file_size is a decimal string, as
// the server wants.
type handshakeRequest struct {
	Key          string `json:"key"`
	RelativePath string `json:"relative_path"`
	FileSize     string `json:"file_size"`
	FileName     string `json:"file_name"`
	ContentHash  string `json:"content_hash"`
	ContentType  string `json:"content_type"`
}

type handshakeAnswer struct {
	UploadURL string `json:"uploadUrl"`
	Token     string `json:"token"`
}

// handshake runs stage 1. done is true when res is the final outcome (409,
// or a failure); otherwise ans leads to stage 2.
func (u *Uploader) handshake(ctx context.Context, endpoint *url.URL, sess Session, a Asset) (ans handshakeAnswer, res Result, done bool) {
	payload, err := json.Marshal(handshakeRequest{
		Key:          a.Key,
		RelativePath: a.RelativePath,
		FileSize:     strconv.FormatInt(a.Size, 10),
		FileName:     a.FileName,
		ContentHash:  a.ContentHash,
		ContentType:  contentType(a),
	})
	if err != nil {
		return ans, u.result(StageHandshake, nil, fmt.Errorf("encode handshake: %w", err), sess), true
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, endpoint.String(), payload)
	if err != nil {
		return ans, u.result(StageHandshake, nil, fmt.Errorf("build handshake: %w", err), sess), true
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+sess.AccessToken)
	req.Header.Set("Origin", u.origin)
	req.Header.Set("X-Dataset-Token", sess.DatasetToken)

	resp, err := u.client.Do(req)
	if err != nil {
		return ans, u.result(StageHandshake, nil, err, sess), true
	}
	defer drain(resp)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return ans, u.result(StageHandshake, resp, nil, sess), true
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(&ans)
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxErr), errors.As(err, &typeErr):
		err = fmt.Errorf("%w: decode handshake answer: %w", ErrBadAnswer, err)
	case err != nil: // the connection failed mid-answer
		err = fmt.Errorf("read handshake answer: %w", err)
	case ans.UploadURL == "" || ans.Token == "":
		err = fmt.Errorf("%w: handshake answer without uploadUrl or token", ErrBadAnswer)
	}
	if err != nil {
		res = u.result(StageHandshake, nil, err, sess)
		res.Status = resp.StatusCode
		return ans, res, true
	}
	return ans, Result{}, false
}

// send runs stage 2 with the upload token of ans.
func (u *Uploader) send(ctx context.Context, endpoint *url.URL, sess Session, a Asset, body io.ReadSeeker, ans handshakeAnswer) Result {
	target, err := endpoint.Parse(ans.UploadURL)
	switch {
	case err != nil:
		err = fmt.Errorf("%w: parse uploadUrl: %w", ErrBadAnswer, err)
	case origin(target) != u.origin:
		// The bearer token is only ever sent where the configuration said.
		err = fmt.Errorf("%w: %s://%s is not the endpoint's origin", ErrUploadURL, target.Scheme, target.Host)
	}
	if err != nil {
		return u.result(StageUpload, nil, err, sess, ans.Token)
	}

	rw := &rewinder{ctx: ctx, rs: body, size: a.Size}
	ctx = context.WithValue(ctx, stageUploadKey{}, true)
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, target.String(), retryablehttp.ReaderFunc(rw.body))
	if err != nil {
		return u.result(StageUpload, nil, fmt.Errorf("build upload: %w", err), sess, ans.Token)
	}
	req.ContentLength = a.Size
	req.Header.Set("Content-Type", contentType(a))
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+sess.AccessToken)
	req.Header.Set("X-Upload-Token", ans.Token)
	req.Header.Set("X-Dataset-Token", sess.DatasetToken)
	req.Header.Set("Origin", u.origin)

	resp, err := u.client.Do(req)
	if err != nil {
		return u.result(StageUpload, nil, err, sess, ans.Token)
	}
	defer drain(resp)
	return u.result(StageUpload, resp, nil, sess, ans.Token)
}

func contentType(a Asset) string {
	if a.ContentType == "" {
		return "application/octet-stream"
	}
	return a.ContentType
}

// result classifies an exchange that ended with resp or err, with every
// token of sess and extra redacted from what it keeps.
func (u *Uploader) result(stage string, resp *http.Response, err error, sess Session, extra ...string) Result {
	secrets := append([]string{sess.AccessToken, sess.RefreshToken, sess.DatasetToken}, extra...)
	if err != nil {
		return Result{
			Class:  Classify(0, err),
			Stage:  stage,
			Reason: redactSecrets(stage+": "+describe(err), secrets),
			Err:    redactError(err),
		}
	}
	class := Classify(resp.StatusCode, nil)
	r := Result{
		Class:  class,
		Status: resp.StatusCode,
		Stage:  stage,
		Err:    &StatusError{Stage: stage, Status: resp.StatusCode, Class: class},
	}
	r.Reason = fmt.Sprintf("%s: %d %s", stage, resp.StatusCode, http.StatusText(resp.StatusCode))
	if resp.StatusCode == http.StatusConflict {
		r.Reason = stage + ": already stored (409)"
	}
	if class == Transient {
		r.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	if class != Success {
		// Redact before cutting to the excerpt's length, so that a token cut in two by the
		// limit cannot leave its first half behind.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
		body := redactSecrets(strings.ToValidUTF8(string(b), "\uFFFD"), secrets)
		r.Body = strings.TrimSpace(truncateUTF8(body, maxExcerptBytes))
	}
	return r
}

// redactSecrets replaces every non-empty secret in s.
func redactSecrets(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redacted)
		}
	}
	return s
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// drain reads a little of what is left of resp's body, so the connection
// can be reused, and closes it.
func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBytes))
	resp.Body.Close()
}
