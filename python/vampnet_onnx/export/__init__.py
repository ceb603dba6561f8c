"""Graph builders that turn the torch modules of `vampnet_onnx.model` into ONNX files."""
