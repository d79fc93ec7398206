package connlimit

// FDReserve is how many file descriptors EffectiveMax keeps back for everything but client
// connections: the control endpoint's connections, the upstream pool's idle connections,
// the pending store, the spool, the CA and log files. A quarter of the limit, when that is
// less.
const FDReserve = 256

// fdsPerConn is what one client connection may cost: its own descriptor and one upstream (a
// raw tunnel always holds one; a MITM'd connection does while a request runs).
const fdsPerConn = 2

// EffectiveMax returns want lowered to what the process's file-descriptor limit allows,
// and that limit: 0 where there is none, as on Windows, and then want is kept.
func EffectiveMax(want int) (n int, fdLimit uint64) {
	fdLimit = processFDLimit()
	return fitFDs(want, fdLimit), fdLimit
}

// fitFDs lowers want so that fdsPerConn descriptors per connection fit in limit after the
// reserve. A zero limit means none.
func fitFDs(want int, limit uint64) int {
	if limit == 0 {
		return want
	}
	reserve := min(FDReserve, limit/4)
	if fit := (limit - reserve) / fdsPerConn; fit < uint64(want) {
		return int(max(fit, 1))
	}
	return want
}
