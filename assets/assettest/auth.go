package assettest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// AnonKey is the Supabase anon key of the fake project: the token endpoint
// wants it in the apikey header and as "Authorization: Bearer".
const AnonKey = "assettest-anon-key"

// Lifetimes and limits of the tokens, as on the real services.
const (
	// DefaultAccessTokenTTL is the lifetime of an access token, GoTrue's
	// default JWT expiry (GOTRUE_JWT_EXP, 3600 s). See SetAccessTokenTTL.
	DefaultAccessTokenTTL = time.Hour
	// DatasetTokenTTL is the lifetime of a dataset token
	// (anonymous-sync-v2.ts:57).
	DatasetTokenTTL = 7 * 24 * time.Hour
	// DefaultRefreshReuseInterval is how long a rotated refresh token may
	// still be used, Supabase's default. See SetRefreshReuseInterval.
	DefaultRefreshReuseInterval = 10 * time.Second
	// AccessTokenLeeway is the clock tolerance of the access token's exp
	// and nbf (utils.ts:477). Dataset and upload tokens get none.
	AccessTokenLeeway = 30 * time.Second
)

// The claims the real server wants in its tokens.
const (
	AccessAudience  = "authenticated" // utils.ts:476
	DatasetAudience = "fusou-upload"  // utils.ts:612
	DatasetType     = "dataset"       // utils.ts:609
)

// hmacMethods are the algorithms jose's jwtVerify accepts with a secret
// key, as the real server verifies dataset and upload tokens (utils.ts:143).
var hmacMethods = []string{"HS256", "HS384", "HS512"}

// Tokens is what one sign-in (NewSession) or refresh hands out.
type Tokens struct {
	Access    string    // Supabase access token (ES256 JWT)
	Refresh   string    // Supabase refresh token
	Dataset   string    // FUSOU dataset token (HS256 JWT)
	ExpiresAt time.Time // the access token's expiry
}

// tokenFamily is one sign-in: every refresh token descended from it.
type tokenFamily struct {
	user, sessionID string
	newest          string // the refresh token handed out last
	revoked         bool
}

// refreshToken is one refresh token of a family.
type refreshToken struct {
	family    *tokenFamily
	parent    string    // the token it was rotated from, "" for the first
	rotatedAt time.Time // when it was first used; zero until then
}

// jwk is one key of the JWKS document, in Supabase's shape.
type jwk struct {
	Kty    string   `json:"kty"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	Ext    bool     `json:"ext"`

	pub *ecdsa.PublicKey
}

// marshalJWKS encodes the public half of signKey as a JWKS document.
func (s *Server) marshalJWKS() []byte {
	raw, err := s.signKey.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic("assettest: encode the public key: " + err.Error())
	}
	enc := base64.RawURLEncoding
	k := jwk{Kty: "EC", Crv: "P-256", X: enc.EncodeToString(raw[1:33]), Y: enc.EncodeToString(raw[33:]),
		Kid: s.kid, Alg: "ES256", Use: "sig", KeyOps: []string{"verify"}, Ext: true}
	b, err := json.Marshal(map[string][]jwk{"keys": {k}})
	if err != nil {
		panic("assettest: encode the JWKS document: " + err.Error())
	}
	return b
}

// parseJWKS reads the P-256 keys of a JWKS document.
func parseJWKS(doc []byte) ([]jwk, error) {
	var set struct{ Keys []jwk }
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, err
	}
	var keys []jwk
	for _, k := range set.Keys {
		if k.Kty != "EC" || k.Crv != "P-256" {
			continue
		}
		x, errX := base64.RawURLEncoding.DecodeString(k.X)
		y, errY := base64.RawURLEncoding.DecodeString(k.Y)
		if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("key %q: bad coordinates", k.Kid)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Kid, err)
		}
		k.pub = pub
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no P-256 key")
	}
	return keys, nil
}

// issuer is the iss of access tokens: {supabase_url}/auth/v1 (utils.ts:475).
func (s *Server) issuer() string { return s.URL + "/auth/v1" }

// NewSession signs a new user in: a fresh refresh-token family, an access
// token (SetAccessTokenTTL) and a dataset token (DatasetTokenTTL) for a new
// user and dataset.
func (s *Server) NewSession() Tokens {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	fam := &tokenFamily{user: uuid.NewString(), sessionID: uuid.NewString()}
	refresh := s.newRefreshTokenLocked(fam, "")
	access, exp := s.signAccess(s.accessClaimsLocked(fam, now))
	return Tokens{
		Access:    access,
		Refresh:   refresh,
		Dataset:   s.signDataset(datasetClaims(fam.user, now)),
		ExpiresAt: exp,
	}
}

// newRefreshTokenLocked hands out a new refresh token of fam, rotated from
// parent; mu must be held.
func (s *Server) newRefreshTokenLocked(fam *tokenFamily, parent string) string {
	tok := base64.RawURLEncoding.EncodeToString(randomBytes(12))
	s.refreshTokens[tok] = &refreshToken{family: fam, parent: parent}
	fam.newest = tok
	return tok
}

// accessClaimsLocked is what GoTrue puts in an access token of fam's user
// (internal/tokens/service.go, GenerateAccessToken); mu must be held.
func (s *Server) accessClaimsLocked(fam *tokenFamily, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss":           s.issuer(),
		"sub":           fam.user,
		"aud":           AccessAudience,
		"exp":           now.Add(s.accessTTL).Unix(),
		"iat":           now.Unix(),
		"email":         "",
		"phone":         "",
		"app_metadata":  map[string]any{"provider": "anonymous", "providers": []string{"anonymous"}},
		"user_metadata": map[string]any{},
		"role":          "authenticated",
		"aal":           "aal1",
		"amr":           []map[string]any{{"method": "anonymous", "timestamp": now.Unix()}},
		"session_id":    fam.sessionID,
		"is_anonymous":  true,
	}
}

// datasetClaims is what FUSOU puts in a dataset token
// (anonymous-sync-v2.ts:195-213), at now.
func datasetClaims(user string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub":        user,
		"dataset_id": hex.EncodeToString(randomBytes(32)),
		"typ":        DatasetType,
		"aud":        DatasetAudience,
		"iat":        now.Unix(),
		"exp":        now.Add(DatasetTokenTTL).Unix(),
	}
}

// signAccess signs claims with the fake's ES256 key, naming it by kid, and
// returns the token and its expiry (zero without a numeric exp).
func (s *Server) signAccess(claims jwt.MapClaims) (string, time.Time) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = s.kid
	tok, err := t.SignedString(s.signKey)
	if err != nil {
		panic("assettest: sign an access token: " + err.Error())
	}
	var exp time.Time
	var secs float64
	if b, err := json.Marshal(claims["exp"]); err == nil && json.Unmarshal(b, &secs) == nil && secs != 0 {
		exp = time.Unix(int64(secs), 0)
	}
	return tok, exp
}

// signDataset signs claims with the dataset secret (HS256).
func (s *Server) signDataset(claims jwt.MapClaims) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.datasetSecret)
	if err != nil {
		panic("assettest: sign a dataset token: " + err.Error())
	}
	return tok
}

// overlay sets each claim of over on base; a nil value removes the claim.
func overlay(base, over jwt.MapClaims) jwt.MapClaims {
	for k, v := range over {
		if v == nil {
			delete(base, k)
			continue
		}
		base[k] = v
	}
	return base
}

// MintAccessToken signs an access token for a new user with the fake's
// key: claims are laid over a valid set (iss, sub, aud, exp, iat,
// session_id, ... at the fake's clock), a nil value removing that claim.
// It is for tests of bad claims: a wrong iss or aud, an exp in the past.
func (s *Server) MintAccessToken(claims jwt.MapClaims) string {
	s.mu.Lock()
	fam := &tokenFamily{user: uuid.NewString(), sessionID: uuid.NewString()}
	base := s.accessClaimsLocked(fam, s.now())
	s.mu.Unlock()
	tok, _ := s.signAccess(overlay(base, claims))
	return tok
}

// MintDatasetToken signs a dataset token for a new user with the fake's
// secret: claims are laid over a valid set (sub, dataset_id, typ, aud, iat,
// exp at the fake's clock), a nil value removing that claim.
func (s *Server) MintDatasetToken(claims jwt.MapClaims) string {
	base := datasetClaims(uuid.NewString(), s.clock())
	return s.signDataset(overlay(base, claims))
}

// SetAccessTokenTTL sets the lifetime of access tokens minted from now on
// (whole seconds count); 0 restores DefaultAccessTokenTTL.
func (s *Server) SetAccessTokenTTL(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d == 0 {
		d = DefaultAccessTokenTTL
	}
	s.accessTTL = d
}

// SetRefreshReuseInterval sets how long a rotated refresh token may still
// be used (DefaultRefreshReuseInterval until called); 0 allows no reuse but
// the one GoTrue always allows (see the package doc).
func (s *Server) SetRefreshReuseInterval(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reuseInterval = d
}

// RevokeToken makes the access token tok refused from now on, as an expired
// session's is.
func (s *Server) RevokeToken(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokedAccess[tok] = true
}

// Refreshes reports how many requests reached the token endpoint, whatever
// their outcome; it is Requests(Refresh).
func (s *Server) Refreshes() int { return s.Requests(Refresh) }

var errTokenRevoked = errors.New("token revoked")

// joseClock is the server's clock in whole seconds, as jose reads it
// (epoch() floors Date.now() / 1000).
func (s *Server) joseClock() time.Time { return s.clock().Truncate(time.Second) }

// verifyAccess checks a Supabase access token as validateJWT does
// (utils.ts:460-489): signed by a key of the JWKS document, issuer,
// audience, exp and nbf with 30 s of leeway.
func (s *Server) verifyAccess(tok string) error {
	s.mu.Lock()
	revoked := s.revokedAccess[tok]
	s.mu.Unlock()
	if revoked {
		return errTokenRevoked
	}
	algs := make([]string, 0, len(s.jwks))
	for _, k := range s.jwks {
		algs = append(algs, k.Alg)
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, s.jwksKeys,
		jwt.WithValidMethods(algs), // an HS256 "access" token finds no key (alg confusion)
		jwt.WithIssuer(s.issuer()),
		jwt.WithAudience(AccessAudience),
		jwt.WithLeeway(AccessTokenLeeway),
		jwt.WithTimeFunc(s.joseClock))
	if err != nil {
		return err
	}
	return checkJoseClaims(claims)
}

// jwksKeys picks the keys of the JWKS document a token may be signed with,
// as jose's JWKS selection does: the token's kid when it has one, and the
// token's alg.
func (s *Server) jwksKeys(t *jwt.Token) (any, error) {
	rawKid, hasKid := t.Header["kid"]
	kid, _ := rawKid.(string)
	var set jwt.VerificationKeySet
	for _, k := range s.jwks {
		if (hasKid && k.Kid != kid) || k.Alg != t.Method.Alg() {
			continue
		}
		set.Keys = append(set.Keys, k.pub)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("no matching key in the JWKS document")
	}
	return set, nil
}

// verifyHMAC checks a token signed with secret as verifySignedToken does
// (utils.ts:137-148): an HMAC algorithm, exp and nbf with no leeway.
func (s *Server) verifyHMAC(tok string, secret []byte) (jwt.MapClaims, error) {
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods(hmacMethods), jwt.WithTimeFunc(s.joseClock))
	if err != nil {
		return nil, err
	}
	if err := checkJoseClaims(claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// verifyDataset checks a dataset token as validateDatasetToken does
// (utils.ts:590-623) and returns its sub.
func (s *Server) verifyDataset(tok string) (string, error) {
	c, err := s.verifyHMAC(tok, s.datasetSecret)
	if err != nil {
		return "", err
	}
	sub, subOK := c["sub"].(string)
	_, idOK := c["dataset_id"].(string)
	// aud is compared with !==, so ["fusou-upload"] does not do.
	if c["typ"] != DatasetType || !subOK || !idOK || c["aud"] != DatasetAudience {
		return "", errors.New("dataset token claims invalid")
	}
	return sub, nil
}

// checkJoseClaims refuses what jose refuses and jwt/v5 lets through: an
// iat that is not a number (jwt/v5 reads iat only when asked to compare it
// with the clock, which jose does not do), and an exp of 0 (which jwt/v5
// takes for no exp).
func checkJoseClaims(c jwt.MapClaims) error {
	if v, ok := c["iat"]; ok {
		if _, isNum := v.(float64); !isNum {
			return errors.New(`"iat" claim must be a number`)
		}
	}
	if v, ok := c["exp"].(float64); ok && v == 0 {
		return jwt.ErrTokenExpired
	}
	return nil
}
