package pending

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fuzzStem is the file name stem FuzzDecodeMeta decodes under (SPEC §6's example id); the seeds
// in testdata/fuzz/FuzzDecodeMeta use it.
const fuzzStem = "0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c"

// FuzzDecodeMeta feeds arbitrary bytes to the .json decoder. It must never panic, and whatever it
// accepts must be safe to act on (a canonical UUID naming the file, a file_path that stays in the
// store, a usable context) and must survive the store's own encoding unchanged.
func FuzzDecodeMeta(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, c, err := decodeMeta(fuzzStem, data)
		if err != nil {
			return
		}
		if m.ID != fuzzStem || !validID(m.ID) {
			t.Fatalf("accepted id %q", m.ID)
		}
		if p := filepath.Clean(filepath.FromSlash(m.FilePath)); p != fuzzStem+".bin" || filepath.IsAbs(p) {
			t.Fatalf("accepted file_path %q", m.FilePath)
		}
		if err := checkContext(c); err != nil {
			t.Fatalf("accepted context %+v: %v", c, err)
		}
		again, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("encode accepted meta: %v", err)
		}
		m2, c2, err := decodeMeta(fuzzStem, again)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, again)
		}
		// null and {} headers are the same to the store.
		if len(m.Headers) == 0 && len(m2.Headers) == 0 {
			m.Headers, m2.Headers = nil, nil
		}
		if !reflect.DeepEqual(m2, m) || c2 != c {
			t.Fatalf("round trip changed the metadata:\n%+v\n%+v", m, m2)
		}
	})
}

// FuzzFastDecode checks the fast path of decodeMeta against encoding/json: whatever
// fastDecodeMeta accepts, encoding/json must accept and decode to exactly the same values.
func FuzzFastDecode(f *testing.F) {
	c := Context{RelativePath: "kcs2/img/title/01.png", Key: "assets/kcs2/img/title/01.png", FileSize: 12345,
		ContentHash: strings.Repeat("ab", 32), ContentType: "image/png", FileName: "01.png"}
	ctx, _ := encodeContext(c)
	m := Meta{ID: fuzzStem, TargetURL: "https://fusou.dev/api/asset-sync/upload?a=1&b=<2>",
		Headers:   map[string]string{"Origin": "https://fusou.dev", "X-Note": "tab\there \"quoted\" é ✓"},
		CreatedAt: 1764633600, AttemptCount: 3, LastAttemptAt: -1, LastError: "503\nbody: {\"error\":\"busy\"}\u2028",
		FilePath: fuzzStem + ".bin", Context: ctx}
	indented, _ := encodeMeta(m)
	compact, _ := json.Marshal(m)
	f.Add(indented)
	f.Add(compact)
	f.Add([]byte(`{"id":"a","id":"b"}`))
	f.Add([]byte(`{"ID":"x","created_at":1e3,"attempt_count":01,"headers":null}`))
	f.Add([]byte(`{"context":"{\"file_size\":-0,\"key\":\"\\u00e9\"}","last_error":"\ud800"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fm, fc, ok := fastDecodeMeta(data)
		if !ok {
			return
		}
		var jm Meta
		if err := json.Unmarshal(data, &jm); err != nil {
			t.Fatalf("fast path accepted what encoding/json refuses (%v): %q", err, data)
		}
		var jc Context
		if err := json.Unmarshal([]byte(jm.Context), &jc); err != nil {
			t.Fatalf("fast path accepted a context encoding/json refuses (%v): %q", err, jm.Context)
		}
		if (jm.Headers == nil) != (fm.Headers == nil) || !reflect.DeepEqual(fm, jm) || fc != jc {
			t.Fatalf("decoders differ on %q:\nfast %+v %+v\njson %+v %+v", data, fm, fc, jm, jc)
		}
	})
}
