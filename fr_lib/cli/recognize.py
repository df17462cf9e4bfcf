"""``fr recognize``: recognise enrolled people on a camera, a video file or a folder of frames; write GIF / MP4."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fr_lib.cli.compare import CliError, add_model_arguments, load_pipeline, run_cli


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "recognize", help="recognise enrolled people on a camera / video / frames folder, write a GIF or MP4",
        description="MTCNN on each frame, names (or 'Unknown' below the threshold) from a gallery enrolled from "
                    "--people-faces (one folder per person), boxes, optional landmarks and an FPS counter, "
                    "written to --output. Runs headless.")
    p.add_argument("--source", required=True, help="camera index (0), a video file, or a folder of frames")
    add_model_arguments(p)
    p.add_argument("--people-faces", type=Path, metavar="DIR",
                   help="people_faces/ folder: one sub-folder of photos per person (enrolled before the stream)")
    p.add_argument("--db", type=Path, metavar="FILE",
                   help="SQLite gallery to use and keep (the one `fr serve` uses); default: in memory")
    p.add_argument("--output", type=Path, metavar="OUT", help="out.gif or out.mp4")
    p.add_argument("--landmarks", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the 5 landmarks (default: on)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="identify every N-th frame, reuse the last answer in between (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (a camera runs until Ctrl-C)")
    p.add_argument("--fps", type=float, help="frame rate of a frames folder and of the output (default: source's)")
    p.add_argument("--liveness", action="store_true",
                   help="blink check (eye aspect ratio over dlib's 68 landmarks): a tracked face is marked live "
                        "only after it blinks; a photo held to the camera never is (needs the dlib extra)")
    p.set_defaults(func=lambda args: run_cli(recognize_command, args))


def recognize_command(args) -> int:
    from fr_lib.recognition.gallery import Gallery
    from fr_lib.recognition.video import open_source, recognize_stream

    if args.every < 1:
        raise CliError(f"--every must be >= 1, got {args.every}")
    if args.people_faces is None and args.db is None:
        raise CliError("give --people-faces DIR (one folder per person) and/or --db gallery.sqlite")
    source = open_source(args.source, fps=args.fps)  # before loading the model: a bad source fails fast
    liveness = None
    if args.liveness:
        from fr_lib.recognition.liveness import EyeLandmarker, LivenessTracker

        try:
            liveness = LivenessTracker(EyeLandmarker())
        except ImportError as e:
            raise CliError(f"--liveness: {e}") from e
    pipeline, threshold, where = load_pipeline(args)
    gallery = Gallery(args.db if args.db is not None else ":memory:", pipeline, threshold=threshold)
    if args.people_faces is not None:
        report = gallery.enroll_folder(args.people_faces)
        print(report.summary())
    if len(gallery) == 0:
        raise CliError(f"the gallery {args.db} is empty: enroll people with --people-faces DIR")
    print(f"{len(gallery)} people enrolled; threshold {threshold:.4f} ({where})")
    stats = recognize_stream(source, gallery, output=args.output, every=args.every, landmarks=args.landmarks,
                             max_frames=args.max_frames, output_fps=args.fps, liveness=liveness)
    seen = sorted({n for names in stats.names_per_frame for n in names})
    print(f"{stats.frames} frames ({stats.identified} identified) at {stats.fps:.1f} FPS; "
          f"faces seen: {', '.join(seen) or 'none'}")
    if liveness is not None:
        live_frames = sum(any(flags) for flags in stats.live_per_frame)
        print(f"liveness: {liveness.tracks_started} face track(s); a live (blinked) face on {live_frames} of "
              f"{stats.frames} frames")
    if stats.skipped:
        print(f"skipped {len(stats.skipped)} unreadable frame(s): "
              + "; ".join(f"{n}: {r}" for n, r in stats.skipped[:5]), file=sys.stderr)
    if stats.output is not None:
        print(f"wrote {stats.output}")
    return 0
