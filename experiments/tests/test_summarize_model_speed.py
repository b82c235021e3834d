"""The speed summary sums a video timed in segments only when the segments tile steps 0..100."""

import json

from experiments.summarize_model_speed import load_timed_videos, segmented_video_seconds


def test_segments_that_tile_the_video_are_summed():
    assert segmented_video_seconds([("36:72", 2.0), ("0:36", 1.0), ("72:100", 3.5)]) == 6.5


def test_incomplete_or_overlapping_segments_give_no_video_time():
    assert segmented_video_seconds([("0:36", 1.0), ("36:72", 2.0)]) is None  # ends at step 72
    assert segmented_video_seconds([("0:36", 1.0), ("40:100", 2.0)]) is None  # gap 36..40
    assert segmented_video_seconds([("0:50", 1.0), ("40:100", 2.0)]) is None  # overlap
    assert segmented_video_seconds([("0:36", 1.0), ("0:36", 1.0), ("36:100", 2.0)]) is None  # repeated segment


def test_load_timed_videos_reads_whole_and_segmented_runs(tmp_path):
    def write(name, rows):
        (tmp_path / name).write_text(json.dumps({"header": {}, "rows": rows}))

    row = {"size": "93x720p", "attention": "full (mosaic_gpu)"}
    write("video100_a_seg1.json", [row | {"segment": "0:60", "segment_s": 600.0}])
    write("video100_a_seg2.json", [row | {"segment": "60:100", "segment_s": 400.25}])
    write("video100_b.json", [{"size": "29x720p", "attention": "x", "video_100_steps_s": 145.3}])
    write("video100_c_seg1.json", [{"size": "29x720p", "attention": "y", "segment": "0:50", "segment_s": 9.0}])
    timed = load_timed_videos(tmp_path)
    assert timed == {("93x720p", "full (mosaic_gpu)"): 1000.2, ("29x720p", "x"): 145.3}
