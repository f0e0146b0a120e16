package runtime

import (
	"fmt"
	"strings"
)

// DType is the element type of a tensor.
type DType uint8

// The element types backends exchange. Data is always little-endian.
const (
	Invalid DType = iota
	Float32
	Int8
	Uint8
	Int16
	Int32
	Int64
	Bool
	Float16
	Float64
	Uint16
	Uint32
	Uint64
)

var dtypeNames = [...]string{
	Invalid: "invalid", Float32: "float32", Int8: "int8", Uint8: "uint8", Int16: "int16",
	Int32: "int32", Int64: "int64", Bool: "bool", Float16: "float16", Float64: "float64",
	Uint16: "uint16", Uint32: "uint32", Uint64: "uint64",
}

var dtypeSizes = [...]int{
	Invalid: 0, Float32: 4, Int8: 1, Uint8: 1, Int16: 2, Int32: 4, Int64: 8, Bool: 1,
	Float16: 2, Float64: 8, Uint16: 2, Uint32: 4, Uint64: 8,
}

func (d DType) String() string {
	if int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// Size is the size of one element in bytes; 0 for Invalid.
func (d DType) Size() int {
	if int(d) < len(dtypeSizes) {
		return dtypeSizes[d]
	}
	return 0
}

// ParseDType returns the DType with the given name ("int8", "float32", ...),
// the names used in ../shared/models meta.json files and the inference API.
func ParseDType(s string) (DType, error) {
	for i, n := range dtypeNames {
		if i != int(Invalid) && n == strings.ToLower(s) {
			return DType(i), nil
		}
	}
	return Invalid, fmt.Errorf("unknown dtype %q", s)
}

// Quantization maps stored integers to real values:
// real = (q - ZeroPoint[c]) * Scale[c], where c is the index along Axis when
// there is more than one scale (per-channel), or 0.
type Quantization struct {
	Scale     []float32
	ZeroPoint []int64
	Axis      int
}

// TensorInfo describes a model input or output.
type TensorInfo struct {
	Name  string
	DType DType
	// Shape has -1 for dimensions only known at run time.
	Shape []int
	// Quant is nil for tensors that are not quantized.
	Quant *Quantization
}

func (ti TensorInfo) String() string {
	return fmt.Sprintf("%s %s%v", ti.Name, ti.DType, ti.Shape)
}

// Tensor is a dense, row-major tensor of little-endian elements.
type Tensor struct {
	DType DType
	Shape []int
	Data  []byte
}

// NumElements is the product of the shape's dimensions (1 for a scalar).
// It returns -1 if a dimension is negative or the product overflows int.
func NumElements(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		if d != 0 && n > int(^uint(0)>>1)/d {
			return -1
		}
		n *= d
	}
	return n
}

// ByteSize is the size in bytes of a tensor of this dtype and shape, or -1.
func ByteSize(d DType, shape []int) int {
	n := NumElements(shape)
	if n < 0 || d.Size() == 0 {
		return -1
	}
	if n > int(^uint(0)>>1)/d.Size() {
		return -1
	}
	return n * d.Size()
}

// CheckInput reports whether t can be fed to an input described by info:
// same dtype, same rank, equal dimensions where info's are known, and Data
// of exactly the right size. The error wraps ErrInput.
func CheckInput(info TensorInfo, t Tensor) error {
	if t.DType != info.DType {
		return fmt.Errorf("%w: input %q is %s, model expects %s", ErrInput, info.Name, t.DType, info.DType)
	}
	if len(t.Shape) != len(info.Shape) {
		return fmt.Errorf("%w: input %q has shape %v, model expects %v", ErrInput, info.Name, t.Shape, info.Shape)
	}
	for i, d := range info.Shape {
		if d >= 0 && t.Shape[i] != d {
			return fmt.Errorf("%w: input %q has shape %v, model expects %v", ErrInput, info.Name, t.Shape, info.Shape)
		}
		if t.Shape[i] < 0 {
			return fmt.Errorf("%w: input %q has negative dimension in shape %v", ErrInput, info.Name, t.Shape)
		}
	}
	want := ByteSize(t.DType, t.Shape)
	if want < 0 || len(t.Data) != want {
		return fmt.Errorf("%w: input %q has %d bytes, shape %v of %s needs %d", ErrInput, info.Name, len(t.Data), t.Shape, t.DType, want)
	}
	return nil
}
