"""Ray's worker-process setup hook on a local cluster: the libraries every trial imports,
imported while a pooled worker waits for its first trial rather than after the trial has
been handed to it (about 8 s of imports on a 2-core machine, overlapped with the driver's
own start-up)."""


def preload() -> None:
    from ..core.quiet import quiet

    quiet()
    import peft  # noqa: F401  (imports torch and transformers)
