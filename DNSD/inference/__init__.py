"""A trained model outside training: its export to the Paddle inference format and ONNX, each checked
against the checkpoint, and the runtimes that run an exported model."""
