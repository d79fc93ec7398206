package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/elazarl/goproxy"
	"go.uber.org/zap"
)

// roundTrip sends one request upstream: a plain HTTP request, or one read from a MITM'd
// connection. goproxy hands it the request with the client's context (a client abort
// cancels it). It never returns an error for an upstream failure: on the MITM path goproxy
// would close the client's connection without a word, so a 502 is returned instead.
// On a tracked MITM'd connection it marks the request's start and, through the response
// body, its end, for the connection's timeouts and the connection cap.
func (p *Proxy) roundTrip(req *http.Request, ctx *goproxy.ProxyCtx) (resp *http.Response, err error) {
	p.stats.requests.Add(1)
	if tc := trackerOf(ctx); tc != nil {
		tc.RequestStarted()
		defer func() { trackResponse(tc, resp) }() // deferred first: sees the final resp
	}
	defer func() {
		if v := recover(); v != nil {
			p.recovered("round trip", req.URL.Host, v)
			if resp != nil && resp.Body != nil {
				_ = resp.Body.Close()
			}
			resp, err = errorResponse(req, http.StatusBadGateway, "fusou-proxy: internal error"), nil
		}
	}()
	resp, err = p.tr.RoundTrip(req)
	if err != nil {
		return p.upstreamFailed(req, err)
	}
	p.maybeCapture(req, resp)
	return resp, nil
}

// upstreamFailed turns a failed upstream request into the client's 502, logged.
func (p *Proxy) upstreamFailed(req *http.Request, err error) (*http.Response, error) {
	host := req.URL.Host
	if req.Context().Err() != nil {
		// The client went away first; there is no one to answer.
		return nil, err
	}
	if isCertError(err) {
		p.stats.upstreamTLSFailures.Add(1)
		p.log.Warn("upstream certificate rejected", zap.String("host", host), zap.Error(err))
		return errorResponse(req, http.StatusBadGateway,
			fmt.Sprintf("fusou-proxy: the certificate of %s failed verification: %v", host, err)), nil
	}
	p.log.Warn("upstream request failed", zap.String("host", host), zap.Error(err))
	return errorResponse(req, http.StatusBadGateway,
		fmt.Sprintf("fusou-proxy: %s could not be reached: %v", host, err)), nil
}

// isCertError reports whether err is an upstream certificate that failed verification.
func isCertError(err error) bool {
	var (
		verr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
		herr x509.HostnameError
		ierr x509.CertificateInvalidError
	)
	return errors.As(err, &verr) || errors.As(err, &uerr) || errors.As(err, &herr) || errors.As(err, &ierr)
}

// errorResponse is a small text response made by the proxy itself, framed with a
// Content-Length so the client's connection stays usable.
func errorResponse(req *http.Request, code int, msg string) *http.Response {
	body := msg + "\n"
	return &http.Response{
		Status:     strconv.Itoa(code) + " " + http.StatusText(code),
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header: http.Header{
			"Content-Type":           {"text/plain; charset=utf-8"},
			"Content-Length":         {strconv.Itoa(len(body))},
			"X-Content-Type-Options": {"nosniff"},
		},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
