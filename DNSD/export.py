"""`--mode export`: a checkpoint as an inference model, for Paddle Inference and for ONNX Runtime
(inference/export.py)."""
from DNSD.changes import device_keys
from DNSD.config import add_config_flags, stated_values
from DNSD.inference.export import FORMATS, export_checkpoint
from DNSD.runs.folder import checkpoint_in


def add_arguments(parser):
    parser.add_argument("--checkpoint", metavar="PATH", required=True,
                        help="a run folder (its best checkpoint) or a .pdckpt file")
    parser.add_argument("--export-prefix", metavar="PATH",
                        help="path prefix of the inference model (default: beside the checkpoint, e.g. "
                             "RUN_DIR/best-inference/model)")
    parser.add_argument("--format", choices=FORMATS, default="both",
                        help="paddle: PREFIX.json (or .pdmodel) and PREFIX.pdiparams for Paddle Inference; onnx: "
                             "PREFIX.onnx for ONNX Runtime, TensorRT or Triton; both (default)")
    add_config_flags(parser, device_keys)


def execute(args):
    stated = stated_values(args.config, args, args.override)
    prefix, differences = export_checkpoint(checkpoint_in(args.checkpoint), args.export_prefix, stated, args.format)
    checked = ", ".join(f"{form} {difference:.1e}" for form, difference in differences.items())
    print(f"exported the inference model to {prefix}.* ({prefix}-info.json describes it); largest difference of "
          f"its probabilities from the checkpoint's: {checked}")
