package assets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fusou-proxy/fusou-proxy/internal/atomicfile"
	"go.uber.org/zap"
)

// Defaults for IndexOptions' zero fields.
const (
	// DefaultIndexMinInterval is the least time between two unforced
	// refreshes (SPEC §5: at most every 10 minutes).
	DefaultIndexMinInterval = 10 * time.Minute
)

// StageKeys names the keys request in a StatusError.
const StageKeys = "keys"

// indexFileVersion is the format of asset_index.json; a file of another
// version is ignored.
const indexFileVersion = 1

// maxKeysAnswerBytes bounds a keys answer; the real server pages its cache
// by 20 MB and a full listing of every game asset is well under this.
const maxKeysAnswerBytes = 256 << 20

// IndexOptions configures an Index.
type IndexOptions struct {
	// Endpoint is asset_existing_keys_endpoint. Empty means the index is
	// never refreshed (Refresh does nothing), only loaded and added to.
	Endpoint string
	// Path is the file the index persists to, <data_dir>/asset_index.json.
	// Empty means memory only.
	Path string
	// Session holds the bearer token. Required with Endpoint.
	Session *SessionHolder
	// Client sends the keys requests; nil means a client with ConnectTimeout
	// and RequestTimeout that trusts the system roots.
	Client *http.Client
	// ConnectTimeout and RequestTimeout (connect_timeout_seconds and
	// request_timeout_seconds) bound the default client's dial and whole
	// request; 0 means no bound.
	ConnectTimeout, RequestTimeout time.Duration
	// MinInterval is the least time between unforced refreshes; 0 means
	// DefaultIndexMinInterval.
	MinInterval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives the index's log lines; nil means zap.NewNop().
	Logger *zap.Logger
}

// Index is the local copy of the server's stored (key, content hash)
// pairs, so that a known asset is skipped without a request. It is safe
// for concurrent use.
type Index struct {
	endpoint    *url.URL // nil: refreshing is off
	path        string
	session     *SessionHolder
	client      *http.Client
	minInterval time.Duration
	now         func() time.Time
	log         *zap.Logger

	refreshMu sync.Mutex // serialises Refresh, and with it writes of the file
	acks      *ackLog    // nil without a path

	mu          sync.RWMutex // guards the fields below
	entries     *keyTable
	since       int64     // the server's snapshotUpperMs of the last listing
	lastRefresh time.Time // the last refresh tried; zero if none
	// addedDuring holds what Add recorded while a refresh's request was out, nil otherwise:
	// the listing may predate those uploads, so merge applies them again on top of it.
	addedDuring map[string]indexEntry
}

type indexEntry struct {
	hash string // "" when the server did not say
	size int64
}

// OpenIndex builds an Index from o, loading o.Path if it exists. A file
// that cannot be read or parsed is logged and ignored: the index is a
// cache, and the next refresh rebuilds it.
func OpenIndex(o IndexOptions) (*Index, error) {
	ix := &Index{
		path:        o.Path,
		session:     o.Session,
		client:      o.Client,
		minInterval: orDefault(o.MinInterval, DefaultIndexMinInterval),
		now:         o.Now,
		log:         o.Logger,
		entries:     newKeyTable(0),
	}
	if o.Endpoint != "" {
		ep, err := parseEndpoint(o.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("parse keys endpoint: %w", err)
		}
		if o.Session == nil {
			return nil, errors.New("open index: no session holder")
		}
		ix.endpoint = ep
	}
	if ix.now == nil {
		ix.now = time.Now
	}
	if ix.log == nil {
		ix.log = zap.NewNop()
	}
	if ix.client == nil {
		ix.client = &http.Client{
			Transport:     newDefaultTransport(o.ConnectTimeout),
			Timeout:       o.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if ix.path != "" {
		ix.acks = &ackLog{path: ix.path + ".acks", log: ix.log}
		if err := ix.load(); err != nil {
			ix.log.Warn("Ignoring unreadable asset index", zap.String("path", ix.path), zap.Error(err))
		}
	}
	return ix, nil
}

// Known reports whether the server stores key with this content hash.
func (ix *Index) Known(key, hash string) bool {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return hash != "" && ix.entries.has(key, hash)
}

// Add records that the server now stores key with hash, after an upload
// succeeded. It is durable within a second (ackLog), and in the index file from the
// next refresh.
func (ix *Index) Add(key, hash string, size int64) {
	ix.mu.Lock()
	ix.entries.set(key, hash, size)
	if ix.addedDuring != nil {
		ix.addedDuring[key] = indexEntry{hash: hash, size: size}
	}
	ix.mu.Unlock()
	if ix.acks != nil {
		ix.acks.add(key, hash, size)
	}
}

// Flush makes every Add so far durable now, for a clean shutdown.
func (ix *Index) Flush() error {
	if ix.acks == nil {
		return nil
	}
	return ix.acks.flush()
}

// Len returns the number of keys in the index.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.entries.len()
}

// Cursor returns the since value of the next refresh (the server's
// snapshotUpperMs of the last listing), 0 before the first.
func (ix *Index) Cursor() int64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.since
}

// Refresh brings the index up to date with the keys endpoint, asking only
// for what was stored since the last listing. Unless force is set it does
// nothing when the last refresh was tried less than MinInterval ago. It
// sends nothing without a session and returns ErrNoSession; a refused or
// failed request returns an error (a *StatusError for an HTTP status) and
// leaves the index as it was. The result is persisted atomically.
func (ix *Index) Refresh(ctx context.Context, force bool) error {
	if ix.endpoint == nil {
		return nil
	}
	ix.refreshMu.Lock()
	defer ix.refreshMu.Unlock()

	now := ix.now()
	ix.mu.RLock()
	last, since := ix.lastRefresh, ix.since
	ix.mu.RUnlock()
	// A last refresh in the future means the clock went back: refresh.
	if !force && !last.IsZero() && !last.After(now) && now.Sub(last) < ix.minInterval {
		return nil
	}
	sess, err := ix.session.Authorized(ctx)
	if err != nil {
		return err
	}
	ix.mu.Lock()
	ix.lastRefresh = now
	ix.addedDuring = make(map[string]indexEntry)
	ix.mu.Unlock()
	defer func() {
		ix.mu.Lock()
		ix.addedDuring = nil
		ix.mu.Unlock()
	}()

	start := time.Now()
	ans, err := ix.fetch(ctx, sess, since)
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusUnauthorized && ix.session.RefreshAfter401(ctx, sess) {
		sess, _ = ix.session.Get()
		ans, err = ix.fetch(ctx, sess, since)
	}
	if err != nil {
		return fmt.Errorf("refresh asset index: %w", err)
	}
	full := !ans.Incremental || since == 0
	ix.merge(ans, full)
	ix.log.Info("Refreshed asset index",
		zap.Bool("incremental", !full),
		zap.Int64("since", since),
		zap.Int("received", len(ans.Items)),
		zap.Int("total", ix.Len()),
		zap.Duration("duration", time.Since(start)))
	if ix.path != "" {
		if err := ix.save(); err != nil {
			return fmt.Errorf("refresh asset index: %w", err)
		}
	}
	return nil
}

// keysAnswer is the part of the keys endpoint's answer the index uses.
type keysAnswer struct {
	Keys  []string `json:"keys"`
	Items []struct {
		Key         string  `json:"key"`
		ContentHash *string `json:"contentHash"`
		Size        int64   `json:"size"`
	} `json:"items"`
	Incremental     bool   `json:"incremental"`
	SnapshotUpperMs int64  `json:"snapshotUpperMs"`
	SnapshotUpperAt string `json:"snapshotUpperAt"`
}

// fetch sends one keys request.
func (ix *Index) fetch(ctx context.Context, sess Session, since int64) (*keysAnswer, error) {
	u := *ix.endpoint
	if since > 0 {
		q := u.Query()
		q.Set("since", strconv.FormatInt(since, 10))
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("build keys request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+sess.AccessToken)
	resp, err := ix.client.Do(req)
	if err != nil {
		return nil, redactError(err)
	}
	defer drain(resp)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{Stage: StageKeys, Status: resp.StatusCode, Class: Classify(resp.StatusCode, nil)}
	}
	var ans keysAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxKeysAnswerBytes)).Decode(&ans); err != nil {
		return nil, fmt.Errorf("%w: decode keys answer: %w", ErrBadAnswer, err)
	}
	return &ans, nil
}

// merge folds a listing into the index: a full one replaces it, an
// incremental one updates it. The cursor becomes the snapshot's upper
// bound, which the server promises the next listing starts after.
func (ix *Index) merge(ans *keysAnswer, full bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if full {
		ix.entries = newKeyTable(len(ans.Items))
	}
	for _, it := range ans.Items {
		if it.Key == "" {
			continue
		}
		var hash string
		if it.ContentHash != nil {
			hash = strings.ToLower(*it.ContentHash)
		}
		ix.entries.set(it.Key, hash, it.Size)
	}
	// Older servers list keys without items: known keys, unknown hashes.
	for _, k := range ans.Keys {
		if k != "" && !ix.entries.contains(k) {
			ix.entries.set(k, "", 0)
		}
	}
	// Uploads that succeeded while the request was out are newer than the listing.
	for k, e := range ix.addedDuring {
		ix.entries.set(k, e.hash, e.size)
	}
	switch {
	case ans.SnapshotUpperMs > 0:
		ix.since = ans.SnapshotUpperMs
	case ans.SnapshotUpperAt != "":
		if t, err := time.Parse(time.RFC3339Nano, ans.SnapshotUpperAt); err == nil {
			ix.since = t.UnixMilli()
		}
	default:
		// A cached answer may lack it (SPEC §5): the next listing asks from the same cursor.
		ix.log.Debug("Keys answer without snapshotUpperMs; cursor kept", zap.Int64("since", ix.since))
	}
}

// indexFile is the on-disk form of asset_index.json.
type indexFile struct {
	Version     int             `json:"version"`
	Since       int64           `json:"since"`        // the next refresh's since, Unix ms
	RefreshedAt int64           `json:"refreshed_at"` // when it was last refreshed, Unix ms
	Items       []indexFileItem `json:"items"`
}

type indexFileItem struct {
	Key         string `json:"key"`
	ContentHash string `json:"content_hash,omitempty"`
	Size        int64  `json:"size,omitempty"`
}

func (ix *Index) load() error {
	fileErr := ix.loadFile()
	items, err := ix.acks.read() // read even when the index file is not: these are newer
	ix.mu.Lock()
	for _, it := range items {
		ix.entries.set(it.Key, it.ContentHash, it.Size)
	}
	ix.mu.Unlock()
	return errors.Join(fileErr, err)
}

// loadFile reads the index file itself.
func (ix *Index) loadFile() error {
	b, err := os.ReadFile(ix.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read asset index: %w", err)
	}
	var f indexFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("parse asset index: %w", err)
	}
	if f.Version != indexFileVersion {
		return fmt.Errorf("parse asset index: version %d, want %d", f.Version, indexFileVersion)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, it := range f.Items {
		ix.entries.set(it.Key, it.ContentHash, it.Size)
	}
	ix.since = f.Since
	if f.RefreshedAt > 0 {
		ix.lastRefresh = time.UnixMilli(f.RefreshedAt)
	}
	return nil
}

// save writes the index to its file atomically; refreshMu must be held.
func (ix *Index) save() error {
	// Read before the snapshot: an Add counted in gen has set its entry already, so it is in
	// the snapshot, and an Add after it keeps the ack log (truncate).
	gen := ix.acks.generation()
	ix.mu.RLock()
	f := indexFile{Version: indexFileVersion, Since: ix.since, Items: make([]indexFileItem, 0, ix.entries.len())}
	if !ix.lastRefresh.IsZero() {
		f.RefreshedAt = ix.lastRefresh.UnixMilli()
	}
	ix.entries.each(func(key, hash string, size int64) {
		f.Items = append(f.Items, indexFileItem{Key: key, ContentHash: hash, Size: size})
	})
	ix.mu.RUnlock()
	slices.SortFunc(f.Items, func(a, b indexFileItem) int { return strings.Compare(a.Key, b.Key) })
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode asset index: %w", err)
	}
	if err := atomicfile.WriteFile(ix.path, b, 0o600); err != nil {
		return fmt.Errorf("write asset index: %w", err)
	}
	return ix.acks.truncate(gen)
}
