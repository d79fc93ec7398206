// Package assettest provides an in-process fake of the FUSOU asset-sync API
// and of the part of Supabase Auth that fusou-proxy meets, for tests, in the
// manner of net/http/httptest.
//
// Start one with NewServer or NewTLSServer, sign in with NewSession, and
// point an uploader at UploadEndpoint and KeysEndpoint with the tokens it
// returns (and a session refresher at SupabaseURL with AnonKey). Use the
// knobs (AddFaults, ExpireUploadTokens, SetNow, SetRefreshReuseInterval, ...)
// and counters (Requests, Uploads, Refreshes, LastHeader, ...) to steer and
// observe it. Every method is safe for concurrent use.
//
// There are no kind paths: every request needs tokens the fake minted, as on
// the real server. NewSession hands out an ES256 Supabase access token, a
// refresh token and an HS256 dataset token; MintAccessToken and
// MintDatasetToken make tokens with chosen (bad) claims.
//
// # What it models
//
// The asset routes follow FUSOU-WEB in github.com/tsukasa-u/FUSOU, under
// packages/FUSOU-WEB/src/server (line numbers as of commit a27a905c):
// routes/assets.ts, utils/upload.ts, utils.ts, utils/asset-index-cache.ts,
// constants.ts and app.ts. Each rule is also cited where the fake applies it.
//
//   - One URL serves both upload stages: a POST without X-Upload-Token is the
//     handshake (stage 1), a POST with one is the upload (stage 2)
//     (upload.ts:82-88). Another method or path is a 404 with the Hono
//     catch-all's {"error":true,"message","path"} body (app.ts:226-228);
//     OPTIONS is a 204 (app.ts:162-168).
//   - The access token is a Supabase JWT checked against the JWKS document at
//     {SupabaseURL}/auth/v1/.well-known/jwks.json: a key of that document
//     (ES256 only), issuer {SupabaseURL}/auth/v1, audience "authenticated",
//     30 s of leeway on exp and nbf (utils.ts:450, 474-478). The upload stages
//     want "Authorization: Bearer " spelled so (upload.ts:47-50); the keys
//     route takes any case of the scheme (utils.ts:308-315).
//   - Stage 1: a missing bearer token is 401 {"error","code":"AUTH_MISSING"},
//     an invalid one 401 without a code (upload.ts:102-112); then the body
//     must be JSON, else 400 (upload.ts:114-120); then the dataset token is
//     always required (assets.ts:69): X-Dataset-Token, else the body's
//     dataset_token (utils.ts:642-649), an HS256 JWT verified with no leeway,
//     with typ "dataset", aud exactly "fusou-upload", sub and dataset_id
//     strings (utils.ts:590-623); missing is 401 "dataset_token is required",
//     invalid or expired 401 (utils.ts:651-670).
//   - Then key and relative_path: "\" becomes "/", leading slashes go, empty
//     or holding ".." is 400 (assets.ts:75-85, utils.ts:394-399); file_size
//     must be a JSON string holding a number in (0, 200 MiB], else 400
//     (assets.ts:87-96, utils.ts:711-716, constants.ts:5); content_hash must
//     be non-empty after trimming, else 400 (assets.ts:98-102); the extension
//     of file_name (its last segment, trimmed, control characters dropped),
//     key and relative_path must all be in the allow-list (png, jpg, jpeg,
//     gif, webp, bmp, json), a name without one violating it too, else 415
//     (assets.ts:104-114, utils.ts:365-371, 402-409, 696-706,
//     constants.ts:59-68). A key already stored with the same content_hash is
//     a 409 (assets.ts:117-131), the only 409 the server gives; the same key
//     with a new hash is accepted (a new game version).
//   - The stage-1 answer is 200 {"uploadUrl","token","expiresAt","fields"}
//     with an absolute uploadUrl (upload.ts:206-222). The upload token is an
//     HS256 JWT of the payload plus user_id (the dataset token's sub) and exp
//     (upload.ts:196-200, utils.ts:123-134); its lifetime is 30 s per MiB
//     plus 300 s, between 60 s and 1 h (upload.ts:176-192), unless
//     SetUploadTokenTTL says otherwise.
//   - Stage 2: a missing bearer token is 401 AUTH_MISSING (upload.ts:236-244);
//     an invalid or expired upload token 401 without a code (upload.ts:259-263,
//     no leeway: utils.ts:137-148); then an invalid access token 401
//     AUTH_EXPIRED (upload.ts:275-287). The dataset token is not looked at.
//     The body's SHA-256 must match the token's content_hash, else 400
//     (assets.ts:179-206); the object is then stored, replacing any object
//     under that key (INSERT OR REPLACE, assets.ts:208-235), and the answer
//     is 200 {"key","size"} (assets.ts:252-254).
//   - GET keys: a missing or invalid access token is 401 without a code
//     (assets.ts:262-276). since=<ms> is read as JavaScript's parseInt does
//     and only a value > 0 counts (assets.ts:290-299). The answer is
//     {"keys","items":[{"key","contentHash","size","uploadedAt"}],"total",
//     "refreshedAt","cacheExpiresAt","cached","incremental",
//     "snapshotUpperAt","snapshotUpperMs"} plus "degraded":true only when
//     degraded (asset-index-cache.ts:72-83, 298-330); contentHash is null for
//     an object stored without one (asset-index-cache.ts:67, Seed with "");
//     items come newest first, ties by key descending
//     (asset-index-cache.ts:332-342), only those uploaded after since and at
//     or before snapshotUpperMs (asset-index-cache.ts:344-352, 713);
//     cacheExpiresAt is refreshedAt plus 6 h (asset-index-cache.ts:318,
//     constants.ts:25). SetKeysMode makes the answer a cached or degraded
//     one, optionally without snapshotUpperMs.
//
// The auth routes follow Supabase Auth (GoTrue, github.com/supabase/auth):
//
//   - GET /auth/v1/.well-known/jwks.json serves the fake's ES256 public key
//     (P-256, with a kid); the fake verifies access tokens with the key it
//     reads back from that document.
//   - POST /auth/v1/token?grant_type=refresh_token wants the apikey header
//     (else 401 {"message"}, as the Supabase gateway answers) and a JSON
//     {"refresh_token"}. It answers 200 {"access_token","token_type":"bearer",
//     "expires_in","expires_at","refresh_token","user":{"id",...}} with a new
//     refresh token (internal/tokens/service.go, RefreshTokenGrant and
//     AccessTokenResponse). Refresh tokens rotate as GoTrue's do: the token
//     just rotated (the parent of the family's newest) may be used again at
//     any time and gets the newest one back; an older rotated token is
//     accepted within the reuse interval (10 s by default,
//     SetRefreshReuseInterval) and otherwise revokes the whole family (every
//     token descended from the same sign-in) with a 400
//     refresh_token_already_used; an unknown token is a 400
//     refresh_token_not_found. Errors are shaped as GoTrue shapes them
//     (internal/api/errors.go, HandleResponseError): {"code":400,
//     "error_code","msg"}, or {"code":"<error_code>","message"} when the
//     request sends X-Supabase-Api-Version: 2024-01-01 or later; a missing
//     or empty refresh_token and an unknown grant_type are OAuth errors
//     {"error","error_description"} (status 400).
//
// # Where it differs
//
// SPEC §4, §5 and §8 are the client's contract; where they ask more of the
// client than the real server checks, the fake is stricter, so that client
// bugs show up in tests:
//
//   - file_size must be decimal digits (SPEC §5 "<decimal string>"; the real
//     server also takes "1e3" or " 12"); content_hash must be 64 lower-case
//     hex digits and content_type a non-empty string (SPEC §4; the real
//     server wants the hash only non-empty and ignores content_type).
//   - Stage 2 wants a Content-Length (411 without one, SPEC §5) equal to the
//     handshake's file_size (400 otherwise); the real server reads whatever
//     comes and stores its size.
//   - The token endpoint also wants "Authorization: Bearer <AnonKey>" (401
//     without it), which SPEC §8 asks the client to send; Supabase does not
//     check it.
//   - A revoked refresh-token family stays revoked. GoTrue's legacy tokens
//     stamp the revocation time on each token, so one of them reused within
//     the reuse interval after the revocation is accepted again; SPEC §8
//     treats refresh tokens as single-use.
//
// And where it is simpler, in ways a client cannot rely on:
//
//   - uploadedAt values are made strictly increasing and never at or below a
//     snapshotUpperMs already handed out, so a since cursor never misses an
//     item under a frozen SetNow clock; the real server takes Date.now() and
//     two uploads can share a millisecond.
//   - The stage-1 body is read up to 64 KiB (400 beyond); the real server
//     reads any size. A JSON null body is the real server's 500 (it reads
//     body.key of null); another non-object JSON body is treated as one with
//     no fields, as on the real server.
//   - The fake keeps only the hash and size of each object unless KeepBytes
//     is on, so a 200 MB upload costs no memory; there is no R2 bucket, KV
//     cache or D1 table behind it. The current source always sends
//     snapshotUpperMs; SPEC §5 allows it absent on a cached answer, which
//     SetKeysMode can produce.
//   - Access tokens are not tied to refresh-token families: like Supabase's,
//     they stay valid until they expire, but RevokeToken refuses one at once.
//
// Two things of the real server a client should know, which the fake
// reproduces: its allow-list refuses with 415 everything but images and
// JSON, so a captured .mp4 or .mp3 (SPEC §4 gives them content types) is a
// permanent failure unless FUSOU widens ASSET_SYNC_ALLOWED_EXTENSIONS; and a
// 409 means "this key with this hash", while the same key with a new hash
// is stored again, which SPEC §5's dedupe relies on.
package assettest
