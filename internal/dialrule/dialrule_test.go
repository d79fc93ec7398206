package dialrule

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Rule
		wantErr bool
	}{
		{"w01y.kancolle-server.com:443:127.0.0.1:9443", Rule{"w01y.kancolle-server.com", "443", "127.0.0.1", "9443"}, false},
		{"W01Y.Kancolle-Server.com:443:127.0.0.1:9443", Rule{"w01y.kancolle-server.com", "443", "127.0.0.1", "9443"}, false},
		{"::127.0.0.1:", Rule{"", "", "127.0.0.1", ""}, false},
		{"example.com:443::8443", Rule{"example.com", "443", "", "8443"}, false},
		{"example.com:443:[::1]:8443", Rule{"example.com", "443", "::1", "8443"}, false},
		{"[::1]:443:[fe80::1]:", Rule{"::1", "443", "fe80::1", ""}, false},
		{"example.com:443:127.0.0.1", Rule{}, true},
		{"example.com:443:127.0.0.1:1:2", Rule{}, true},
		{"example.com:http:127.0.0.1:80", Rule{}, true},
		{"example.com:443:127.0.0.1:70000", Rule{}, true},
		{"example.com:443::", Rule{}, true},
		{"[::1:443:h:1", Rule{}, true},
		{"", Rule{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil {
				if again, err := Parse(got.String()); err != nil || again != got {
					t.Errorf("String() %q does not parse back: %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}

func TestRewriteAddr(t *testing.T) {
	rules := []Rule{
		{Host: "a.example", Port: "443", ToHost: "127.0.0.1", ToPort: "9443"},
		{Host: "a.example", ToPort: "8080"},
		{Port: "80", ToHost: "10.0.0.1"},
	}
	tests := map[string]string{
		"a.example:443":   "127.0.0.1:9443",
		"A.EXAMPLE:443":   "127.0.0.1:9443",
		"a.example:81":    "a.example:8080",
		"b.example:80":    "10.0.0.1:80",
		"b.example:443":   "b.example:443",
		"[::1]:80":        "10.0.0.1:80",
		"no-port.example": "no-port.example",
	}
	for in, want := range tests {
		if got := Rewrite(rules, in); got != want {
			t.Errorf("rewriteAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
