"""The allocation profile of each push: what was pushed is kept by where a stack's sums live,
so a renamed frame (CPython 3.10 refines names late), an id whose sums move to its site when it is
reclaimed, and a site folded into <reclaimed> are never pushed twice."""
from memscope_otel.profile_intervals import IntervalProfiles
from memscope_otel.profiles import ProfileStack
from memscope_otel.sites import Site, reclaimed_site

SITE = Site("/app/x.py", "f", 3, "obj")


def id_stack(function, nbytes, count, generation=0):
    return ProfileStack((("/app/x.py", function, 3), ("/app/main.py", "main", 9)), "obj", count, nbytes, 0.0, 0.0,
                        ("id", 20, generation), ("site", SITE))


def site_stack(site, nbytes, count):
    return ProfileStack(((site.file, site.function, site.line),), site.domain, count, nbytes, 0.0, 0.0,
                        ("site", site), ("site", reclaimed_site(site.domain)))


def pushed_space(stacks_in_turn):
    """The alloc_space pushed at each build, summed over stacks."""
    state = {"stacks": stacks_in_turn[0]}
    intervals = IntervalProfiles(lambda: state["stacks"], clock_ns=lambda: 0)
    totals = []
    for stacks in stacks_in_turn[1:]:
        state["stacks"] = stacks
        space = intervals.build()[1]
        assert space.sample_type == "alloc_space"
        totals.append(sum(space.samples.values()))
    return totals


def test_a_renamed_frame_is_not_pushed_again():
    # 100 bytes before the first push, 300 by the second, the frame's name refined in between
    assert pushed_space([[id_stack("<listcomp>", 0, 0)], [id_stack("<listcomp>", 100, 1)],
                         [id_stack("f.<locals>.<listcomp>", 300, 3)]]) == [100, 200]


def test_sums_that_move_from_an_id_to_its_site_and_to_reclaimed_are_pushed_once():
    assert pushed_space([
        [id_stack("f", 0, 0)],
        [id_stack("f", 500, 5)],  # 500 pushed under the id's stack
        [site_stack(SITE, 700, 7)],  # reclaimed: its 500 and 200 more now under the site
        [id_stack("f", 50, 1, generation=1), site_stack(SITE, 700, 7)],  # the id reused
        [site_stack(reclaimed_site("obj"), 750, 8)],  # both folded into <reclaimed>
    ]) == [500, 200, 50, 0]


def test_stacks_without_keys_are_kept_by_their_frames():
    plain = [ProfileStack((("a.py", "g", 1),), "raw", 2, 64, 0.0, 0.0)]
    more = [ProfileStack((("a.py", "g", 1),), "raw", 3, 96, 0.0, 0.0)]
    assert pushed_space([plain, plain, more]) == [0, 32]
