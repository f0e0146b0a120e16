//go:build cgo

package onnxrt

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The first two members of OrtApiBase, stable since ONNX Runtime 1.0.
typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} edgefleet_ort_api_base;

// edgefleet_ort_probe loads the library at path and reports its version and
// whether it offers C API version api. It returns 0 when it does, leaving the
// library loaded; otherwise it unloads it and describes why in msg:
// 1 = not loadable, 2 = not ONNX Runtime, 3 = too old.
static int edgefleet_ort_probe(const char *path, uint32_t api, char *version, size_t vlen, char *msg, size_t mlen) {
	version[0] = 0;
	msg[0] = 0;
	dlerror();
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		snprintf(msg, mlen, "%s", e ? e : "dlopen failed");
		return 1;
	}
	void *f = dlsym(h, "OrtGetApiBase");
	if (!f) {
		const char *e = dlerror();
		snprintf(msg, mlen, "%s", e ? e : "no OrtGetApiBase symbol");
		dlclose(h);
		return 2;
	}
	const edgefleet_ort_api_base *base = ((const edgefleet_ort_api_base *(*)(void))f)();
	if (!base || !base->GetApi || !base->GetVersionString) {
		snprintf(msg, mlen, "OrtGetApiBase returned nothing usable");
		dlclose(h);
		return 2;
	}
	const char *v = base->GetVersionString();
	snprintf(version, vlen, "%s", v ? v : "");
	if (!base->GetApi(api)) {
		dlclose(h);
		return 3;
	}
	return 0;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// probe loads the library at path, if it is an ONNX Runtime new enough for
// onnxruntime_go, and returns its version. The library stays loaded: it is
// about to be used, and unloading ONNX Runtime is not something it supports
// well.
func probe(path string) (version string, err error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var ver, msg [256]C.char
	rc := C.edgefleet_ort_probe(cpath, C.uint32_t(minAPI), &ver[0], C.size_t(len(ver)), &msg[0], C.size_t(len(msg)))
	version = C.GoString(&ver[0])
	switch rc {
	case 0:
		return version, nil
	case 1:
		return "", fmt.Errorf("cannot load: %s", C.GoString(&msg[0]))
	case 2:
		return "", fmt.Errorf("%s is not ONNX Runtime: %s", path, C.GoString(&msg[0]))
	default:
		return version, fmt.Errorf("ONNX Runtime %s at %s is too old: edgefleet needs C API %d (ONNX Runtime 1.24 or newer)", version, path, minAPI)
	}
}
