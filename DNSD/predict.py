"""`--mode predict`: the top-k classes of image files (PNG or JPEG) by a checkpoint or an exported model, as CSV.

Images are read with Pillow, one chunk at a time, and predicted in batches. An image that cannot be used is reported
on its own line and the others are still predicted (exit code 3), or, with --strict, stops the command (exit 2)."""
import csv
import io
import os
import sys

import numpy as np

from DNSD.changes import device_keys
from DNSD.config import add_config_flags, stated_values
from DNSD.errors import InputError, SomeImagesFailed, one_line
from DNSD.files import write_text
from DNSD.inference.runtimes import ENGINES, open_model
from DNSD.runs.folder import check_writable, checkpoint_in
from DNSD.untrusted import file_or_folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
# An image this large is no photo to classify at 32x32, and decoding it could take gigabytes.
MAX_PIXELS = 4096 * 4096
CHUNK = 1024  # images read and predicted at a time
BATCH_SIZE = 128


class ImageProblem(Exception):
    """Why one image cannot be predicted."""


def image_paths(arguments):
    """The image files the arguments name, in order (a folder: its PNG and JPEG files, sorted by name), and the
    other files found in folders, which are skipped."""
    paths, skipped = [], []
    for argument in arguments:
        file_or_folder(argument, "--images")
        if os.path.isdir(argument):
            for name in sorted(os.listdir(argument)):
                path = os.path.join(argument, name)
                if os.path.isfile(path):
                    (paths if name.lower().endswith(IMAGE_EXTENSIONS) else skipped).append(path)
        elif os.path.isfile(argument):
            paths.append(argument)
        else:
            raise InputError(f"--images {argument}: no such file or folder")
    if not paths:
        raise InputError(f"--images {' '.join(arguments)}: no PNG or JPEG file there")
    return paths, skipped


def read_image(path, resize):
    """(uint8 pixels (32, 32, 3), whether they were resized) of a PNG or JPEG file; ImageProblem says why not."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in FORMATS:
                raise ImageProblem(f"it is a {image.format} image, not PNG or JPEG")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageProblem(f"it has {width}x{height} pixels, more than {MAX_PIXELS:,}")
            converted = (width, height) != (32, 32) or image.mode != "RGB"
            if converted and not resize:
                raise ImageProblem(f"it is {width}x{height} {image.mode}, not 32x32 RGB; pass --resize to convert it")
            if image.mode == "F":
                raise ImageProblem("it holds 32-bit floating-point pixels; save it as an 8-bit PNG or JPEG")
            if image.mode.startswith("I"):  # 16-bit grey: scaled to 8 bits (convert() would clip it at 255)
                image = Image.fromarray((np.asarray(image, dtype=np.uint32) // 257).clip(0, 255).astype(np.uint8))
            if converted:
                image = image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.uint8)
    except ImageProblem:
        raise
    except Exception as error:  # Pillow's errors for a damaged file are of many types; none is the user's to read
        raise ImageProblem(f"it cannot be read as an image ({one_line(error) or type(error).__name__})") from None
    return pixels, converted


def csv_rows(paths, results, classes, top_k):
    """The CSV lines of predicted images: path, then the top_k classes and their probabilities, best first."""
    rows = []
    for path, probability in zip(paths, results):
        best = np.argsort(-probability, kind="stable")[:top_k]
        rows.append([path] + [value for index in best for value in (classes[index], f"{probability[index]:.6f}")])
    return rows


def read_chunk(paths, resize, strict, failed):
    """(the paths read, their pixels, how many were resized) of a chunk of image files; an image that cannot be used
    is named on standard error and added to failed, or with strict stops the command."""
    read, images, resized = [], [], 0
    for path in paths:
        try:
            pixels, converted = read_image(path, resize)
        except ImageProblem as problem:
            if strict:
                raise InputError(f"cannot predict {path}: {problem} (--strict stops at the first such image)") from None
            print(f"DNSD: cannot predict {path}: {problem}", file=sys.stderr)
            failed.append(path)
            continue
        read.append(path)
        images.append(pixels)
        resized += converted
    return read, images, resized


def predict_images(arguments, checkpoint=None, model_path=None, top_k=5, resize=False, strict=False, output=None,
                   stated=None, engine=None):
    """Predict the images and write the CSV (output, or standard output); returns the number predicted."""
    if bool(checkpoint) == bool(model_path):
        raise InputError("dnsd predict needs a model: --checkpoint RUN_DIR (or a .pdckpt) or --model PREFIX (or "
                         "PREFIX.onnx, from dnsd export), one of them")
    if output:
        if os.path.isdir(output):
            raise InputError(f"--output {output} is a folder; name the CSV file to write")
        if os.path.exists(output) and not os.path.isfile(output):
            raise InputError(f"--output {output} is not a regular file (a device, FIFO or socket); name a file, or "
                             "leave out --output to write the CSV to standard output")
        check_writable(os.path.dirname(os.path.abspath(output)))
    paths, skipped = image_paths(arguments)
    model = open_model(checkpoint, model_path, engine, stated)
    classes = model.classes
    if not 1 <= top_k <= len(classes):
        raise InputError(f"--top-k {top_k}: the model has {len(classes)} classes; choose 1 to {len(classes)}")
    if skipped:
        print(f"DNSD: skipped {len(skipped)} file(s) that are not PNG or JPEG: {', '.join(skipped[:5])}"
              f"{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    rows, failed, resized = [], [], 0
    for start in range(0, len(paths), CHUNK):
        chunk, images, converted = read_chunk(paths[start:start + CHUNK], resize, strict, failed)
        resized += converted
        if images:
            rows += csv_rows(chunk, model.predict(np.stack(images), BATCH_SIZE), classes, top_k)
    if resized:
        print(f"DNSD: resized {resized} image(s) to 32x32 RGB (Pillow's bilinear filter, the whole image, aspect ratio "
              "not kept)", file=sys.stderr)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path"] + [f"{column}_{rank}" for rank in range(1, top_k + 1)
                                for column in ("class", "probability")])
    writer.writerows(rows)
    if output:
        write_text(output, buffer.getvalue())
    else:
        sys.stdout.write(buffer.getvalue())
    if failed:
        raise SomeImagesFailed(f"{len(failed)} of {len(paths)} images could not be predicted (named above); the "
                               f"{len(rows)} others are in {output or 'the CSV above'}")
    return len(rows)


def add_arguments(parser):
    parser.add_argument("--images", nargs="+", metavar="FILE_OR_FOLDER", required=True,
                        help="PNG or JPEG files, or folders of them (every PNG and JPEG file, sorted by name)")
    parser.add_argument("--checkpoint", metavar="PATH", help="a run folder (its best checkpoint) or a .pdckpt file")
    parser.add_argument("--model", metavar="PREFIX",
                        help="an exported model instead: dnsd export's prefix, or its PREFIX.onnx")
    parser.add_argument("--engine", choices=ENGINES,
                        help="what runs an exported model (default: the fastest that runs it correctly here)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes per image in the CSV (default: 5)")
    parser.add_argument("--resize", action="store_true",
                        help="convert images that are not 32x32 RGB (the whole image to 32x32, Pillow's bilinear "
                             "filter) instead of refusing them")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first image that cannot be read instead of going on without it")
    parser.add_argument("--output", metavar="FILE.csv",
                        help="the CSV to write, replacing one that exists (default: standard output)")
    add_config_flags(parser, device_keys)


def execute(args):
    stated = stated_values(args.config, args, args.override)
    checkpoint = checkpoint_in(args.checkpoint) if args.checkpoint else None
    predict_images(args.images, checkpoint, args.model, args.top_k, args.resize, args.strict, args.output, stated,
                   args.engine)
