package vibration

import "errors"

// errAmbiguous is returned when an input sits on a rounding boundary where
// TFLite's runtimes (their requantization or softmax kernels) answer
// differently.
var errAmbiguous = errors.New("expected output would depend on the TFLite runtime")
