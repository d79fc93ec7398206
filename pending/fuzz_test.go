package pending

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fuzzStem is the file name stem FuzzDecodeMeta decodes under (SPEC §6's example id); the seeds
// in testdata/fuzz/FuzzDecodeMeta use it.
const fuzzStem = "0b6f3c1e-7a52-4f0e-9c1d-2f8a4d5e6b7c"

// FuzzDecodeMeta feeds arbitrary bytes to the .json decoder. It must never panic, and whatever it
// accepts must be safe to act on (a canonical UUID naming the file, a file_path naming its .bin,
// a usable context or a known unsupported kind) and must survive the store's own encoding
// unchanged.
func FuzzDecodeMeta(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeMeta(fuzzStem, data)
		if err != nil {
			return
		}
		if d.meta.ID != fuzzStem || !validID(d.meta.ID) || !namesBin(d.meta.FilePath, fuzzStem) {
			t.Fatalf("accepted id %q, file_path %q", d.meta.ID, d.meta.FilePath)
		}
		switch d.unsupported {
		case KindSnapshot, KindCustom, KindNoContext:
			return
		case "":
		default:
			t.Fatalf("unknown kind %q", d.unsupported)
		}
		c := d.ctx
		if c.ContentHash == "" {
			c.ContentHash = strings.Repeat("ab", 32) // what the store would take from the .bin
		}
		if err := checkContext(c); err != nil {
			t.Fatalf("accepted context %+v: %v", c, err)
		}
		ctx, err := encodeContext(c)
		if err != nil {
			t.Fatal(err)
		}
		m := d.meta
		m.Context, m.Headers = ctx, diskHeaders(m.Headers, c.ContentHash)
		m.FilePath = filepath.Join(string(filepath.Separator)+"store", binName(m.ID))
		again, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("encode accepted meta: %v", err)
		}
		d2, err := decodeMeta(fuzzStem, again)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, again)
		}
		if !reflect.DeepEqual(d2.meta, m) || d2.ctx != c || !d2.ours {
			t.Fatalf("round trip changed the entry:\n%+v %+v\n%+v %+v", m, c, d2.meta, d2.ctx)
		}
	})
}
