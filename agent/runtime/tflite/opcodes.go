package tflite

// Builtin operator codes (enum BuiltinOperator in schema.fbs) of the ops the
// engine implements.
const (
	opAdd                   int32 = 0
	opAveragePool2d         int32 = 1
	opConcatenation         int32 = 2
	opConv2d                int32 = 3
	opDepthwiseConv2d       int32 = 4
	opDequantize            int32 = 6
	opFullyConnected        int32 = 9
	opLogistic              int32 = 14
	opMaxPool2d             int32 = 17
	opMul                   int32 = 18
	opRelu                  int32 = 19
	opReluN1To1             int32 = 20
	opRelu6                 int32 = 21
	opReshape               int32 = 22
	opResizeBilinear        int32 = 23
	opSoftmax               int32 = 25
	opTanh                  int32 = 28
	opPad                   int32 = 34
	opGather                int32 = 36
	opTranspose             int32 = 39
	opMean                  int32 = 40
	opSub                   int32 = 41
	opDiv                   int32 = 42
	opSqueeze               int32 = 43
	opStridedSlice          int32 = 45
	opExp                   int32 = 47
	opSplit                 int32 = 49
	opCast                  int32 = 53
	opPrelu                 int32 = 54
	opMaximum               int32 = 55
	opArgMax                int32 = 56
	opMinimum               int32 = 57
	opNeg                   int32 = 59
	opPadv2                 int32 = 60
	opSlice                 int32 = 65
	opTransposeConv         int32 = 67
	opExpandDims            int32 = 70
	opLog                   int32 = 73
	opSum                   int32 = 74
	opSqrt                  int32 = 75
	opRsqrt                 int32 = 76
	opShape                 int32 = 77
	opArgMin                int32 = 79
	opReduceMax             int32 = 82
	opPack                  int32 = 83
	opUnpack                int32 = 88
	opFloorDiv              int32 = 90
	opFill                  int32 = 94
	opResizeNearestNeighbor int32 = 97
	opLeakyRelu             int32 = 98
	opSquaredDifference     int32 = 99
	opAbs                   int32 = 101
	opSplitV                int32 = 102
	opGatherNd              int32 = 107
	opQuantize              int32 = 114
	opHardSwish             int32 = 117
	opReduceMin             int32 = 89
	opFloor                 int32 = 8
)

// builtinNames names every builtin operator code for error messages.
var builtinNames = [...]string{
	"ADD",
	"AVERAGE_POOL_2D",
	"CONCATENATION",
	"CONV_2D",
	"DEPTHWISE_CONV_2D",
	"DEPTH_TO_SPACE",
	"DEQUANTIZE",
	"EMBEDDING_LOOKUP",
	"FLOOR",
	"FULLY_CONNECTED",
	"HASHTABLE_LOOKUP",
	"L2_NORMALIZATION",
	"L2_POOL_2D",
	"LOCAL_RESPONSE_NORMALIZATION",
	"LOGISTIC",
	"LSH_PROJECTION",
	"LSTM",
	"MAX_POOL_2D",
	"MUL",
	"RELU",
	"RELU_N1_TO_1",
	"RELU6",
	"RESHAPE",
	"RESIZE_BILINEAR",
	"RNN",
	"SOFTMAX",
	"SPACE_TO_DEPTH",
	"SVDF",
	"TANH",
	"CONCAT_EMBEDDINGS",
	"SKIP_GRAM",
	"CALL",
	"CUSTOM",
	"EMBEDDING_LOOKUP_SPARSE",
	"PAD",
	"UNIDIRECTIONAL_SEQUENCE_RNN",
	"GATHER",
	"BATCH_TO_SPACE_ND",
	"SPACE_TO_BATCH_ND",
	"TRANSPOSE",
	"MEAN",
	"SUB",
	"DIV",
	"SQUEEZE",
	"UNIDIRECTIONAL_SEQUENCE_LSTM",
	"STRIDED_SLICE",
	"BIDIRECTIONAL_SEQUENCE_RNN",
	"EXP",
	"TOPK_V2",
	"SPLIT",
	"LOG_SOFTMAX",
	"DELEGATE",
	"BIDIRECTIONAL_SEQUENCE_LSTM",
	"CAST",
	"PRELU",
	"MAXIMUM",
	"ARG_MAX",
	"MINIMUM",
	"LESS",
	"NEG",
	"PADV2",
	"GREATER",
	"GREATER_EQUAL",
	"LESS_EQUAL",
	"SELECT",
	"SLICE",
	"SIN",
	"TRANSPOSE_CONV",
	"SPARSE_TO_DENSE",
	"TILE",
	"EXPAND_DIMS",
	"EQUAL",
	"NOT_EQUAL",
	"LOG",
	"SUM",
	"SQRT",
	"RSQRT",
	"SHAPE",
	"POW",
	"ARG_MIN",
	"FAKE_QUANT",
	"REDUCE_PROD",
	"REDUCE_MAX",
	"PACK",
	"LOGICAL_OR",
	"ONE_HOT",
	"LOGICAL_AND",
	"LOGICAL_NOT",
	"UNPACK",
	"REDUCE_MIN",
	"FLOOR_DIV",
	"REDUCE_ANY",
	"SQUARE",
	"ZEROS_LIKE",
	"FILL",
	"FLOOR_MOD",
	"RANGE",
	"RESIZE_NEAREST_NEIGHBOR",
	"LEAKY_RELU",
	"SQUARED_DIFFERENCE",
	"MIRROR_PAD",
	"ABS",
	"SPLIT_V",
	"UNIQUE",
	"CEIL",
	"REVERSE_V2",
	"ADD_N",
	"GATHER_ND",
	"COS",
	"WHERE",
	"RANK",
	"ELU",
	"REVERSE_SEQUENCE",
	"MATRIX_DIAG",
	"QUANTIZE",
	"MATRIX_SET_DIAG",
	"ROUND",
	"HARD_SWISH",
	"IF",
	"WHILE",
	"NON_MAX_SUPPRESSION_V4",
	"NON_MAX_SUPPRESSION_V5",
	"SCATTER_ND",
	"SELECT_V2",
	"DENSIFY",
	"SEGMENT_SUM",
	"BATCH_MATMUL",
	"PLACEHOLDER_FOR_GREATER_OP_CODES",
	"CUMSUM",
	"CALL_ONCE",
	"BROADCAST_TO",
	"RFFT2D",
	"CONV_3D",
	"IMAG",
	"REAL",
	"COMPLEX_ABS",
	"HASHTABLE",
	"HASHTABLE_FIND",
	"HASHTABLE_IMPORT",
	"HASHTABLE_SIZE",
	"REDUCE_ALL",
	"CONV_3D_TRANSPOSE",
	"VAR_HANDLE",
	"READ_VARIABLE",
	"ASSIGN_VARIABLE",
	"BROADCAST_ARGS",
	"RANDOM_STANDARD_NORMAL",
	"BUCKETIZE",
	"RANDOM_UNIFORM",
	"MULTINOMIAL",
	"GELU",
	"DYNAMIC_UPDATE_SLICE",
	"RELU_0_TO_1",
	"UNSORTED_SEGMENT_PROD",
	"UNSORTED_SEGMENT_MAX",
	"UNSORTED_SEGMENT_SUM",
	"ATAN2",
	"UNSORTED_SEGMENT_MIN",
	"SIGN",
	"BITCAST",
	"BITWISE_XOR",
	"RIGHT_SHIFT",
}
