from mdd import alloc


def test_tuned_malloc_nests(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))

        def malloc_trim(self, pad):
            calls.append(("trim", pad))

    monkeypatch.setattr(alloc, "_libc", lambda: FakeLibc())
    with alloc.tuned_malloc() as outer:
        with alloc.tuned_malloc() as inner:
            pass
        assert calls == [(alloc.M_MMAP_MAX, 0), (alloc.M_TRIM_THRESHOLD, 1 << 30)]  # inner left it on
    assert outer and inner and calls[-1] == ("trim", 0) and len(calls) == 5


def test_tuned_malloc_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("MDD_TUNED_MALLOC", "0")
    with alloc.tuned_malloc() as on:
        assert not on
