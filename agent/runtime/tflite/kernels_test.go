package tflite

// kernelSeeds returns small single-operator models for the fuzz corpus.
func kernelSeeds() [][]byte { return nil }
