//go:build !unix

package registry

// freeBytes is unknown here; uploads are bounded by the size limit only.
func freeBytes(string) (uint64, bool) { return 0, false }
