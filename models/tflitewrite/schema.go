package tflitewrite

// Field slots and enum values of the TFLite schema
// (tensorflow/compiler/mlir/lite/schema/schema.fbs). A union takes two slots:
// its type byte, then its value. Slots never move in the schema, which only
// grows at the end of each table, so these numbers stay valid.

const fileIdentifier = "TFL3"

// schemaVersion is Model.version: 3 since buffers moved to Model.buffers.
const schemaVersion = 3

// Model table.
const (
	modelVersion       = 0
	modelOperatorCodes = 1
	modelSubgraphs     = 2
	modelDescription   = 3
	modelBuffers       = 4
	modelNumFields     = 5
)

// OperatorCode table.
const (
	opcodeDeprecatedBuiltinCode = 0
	opcodeVersion               = 2
	opcodeBuiltinCode           = 3
	opcodeNumFields             = 4
)

// SubGraph table.
const (
	subgraphTensors   = 0
	subgraphInputs    = 1
	subgraphOutputs   = 2
	subgraphOperators = 3
	subgraphName      = 4
	subgraphNumFields = 5
)

// Tensor table.
const (
	tensorShape        = 0
	tensorType         = 1
	tensorBuffer       = 2
	tensorName         = 3
	tensorQuantization = 4
	tensorNumFields    = 5
)

// QuantizationParameters table.
const (
	quantScale              = 2
	quantZeroPoint          = 3
	quantQuantizedDimension = 6
	quantNumFields          = 7
)

// Operator table.
const (
	operatorOpcodeIndex        = 0
	operatorInputs             = 1
	operatorOutputs            = 2
	operatorBuiltinOptionsType = 3
	operatorBuiltinOptions     = 4
	operatorNumFields          = 5
)

// Buffer table.
const (
	bufferData      = 0
	bufferNumFields = 1
	// bufferAlign is the schema's force_align on Buffer.data, kept so
	// engines may read weights in place.
	bufferAlign = 16
)

// BuiltinOperator values.
const (
	opAdd             = 0
	opAveragePool2D   = 1
	opConv2D          = 3
	opDepthwiseConv2D = 4
	opDequantize      = 6
	opFullyConnected  = 9
	opLogistic        = 14
	opMaxPool2D       = 17
	opRelu            = 19
	opReshape         = 22
	opSoftmax         = 25
	opMean            = 40
	opQuantize        = 114
	// opPlaceholderForGreaterOpCodes is what deprecated_builtin_code holds
	// for operators whose code does not fit in a byte.
	opPlaceholderForGreaterOpCodes = 127
)

var opNames = map[int32]string{
	opAdd: "ADD", opAveragePool2D: "AVERAGE_POOL_2D", opConv2D: "CONV_2D",
	opDepthwiseConv2D: "DEPTHWISE_CONV_2D", opDequantize: "DEQUANTIZE",
	opFullyConnected: "FULLY_CONNECTED", opLogistic: "LOGISTIC", opMaxPool2D: "MAX_POOL_2D",
	opRelu: "RELU", opReshape: "RESHAPE", opSoftmax: "SOFTMAX", opMean: "MEAN",
	opQuantize: "QUANTIZE",
}

// BuiltinOptions union members (1-based; 0 is NONE).
const (
	optNone            = 0
	optConv2D          = 1
	optDepthwiseConv2D = 2
	optPool2D          = 5
	optFullyConnected  = 8
	optSoftmax         = 9
	optAdd             = 11
	optReshape         = 17
	optReducer         = 27
	optQuantize        = 89
)

// Option table slots.
const (
	conv2DPadding     = 0
	conv2DStrideW     = 1
	conv2DStrideH     = 2
	conv2DActivation  = 3
	conv2DDilationW   = 4
	conv2DDilationH   = 5
	conv2DNumFields   = 6
	dwPadding         = 0
	dwStrideW         = 1
	dwStrideH         = 2
	dwDepthMultiplier = 3
	dwActivation      = 4
	dwDilationW       = 5
	dwDilationH       = 6
	dwNumFields       = 7
	poolPadding       = 0
	poolStrideW       = 1
	poolStrideH       = 2
	poolFilterWidth   = 3
	poolFilterHeight  = 4
	poolActivation    = 5
	poolNumFields     = 6
	fcActivation      = 0
	fcWeightsFormat   = 1
	fcKeepNumDims     = 2
	fcNumFields       = 3
	softmaxBeta       = 0
	softmaxNumFields  = 1
	addActivation     = 0
	addNumFields      = 1
	reshapeNewShape   = 0
	reshapeNumFields  = 1
	reducerKeepDims   = 0
	reducerNumFields  = 1
)
