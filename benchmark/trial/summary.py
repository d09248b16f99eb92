"""Plain-text summary of one trial's result."""

from __future__ import annotations


def summary_table(result: dict) -> str:
    test, dev = result["test"], result["dev"]
    rows = [
        ("task / strategy / model", f"{result['task']} / {result['strategy']} / {result['model']}"),
        ("best dev step", result["best_step"]),
        ("steps to converge", result["steps_to_converge"]),
        ("dev macro F1", f"{dev['macro_f1']:.4f}"),
        ("test macro F1", f"{test['macro_f1']:.4f}"),
        ("test accuracy", f"{test['accuracy']:.4f}"),
        ("test macro P / R", f"{test['macro_precision']:.4f} / {test['macro_recall']:.4f}"),
        ("test macro AUPRC", f"{test['macro_auprc']:.4f}"),
        ("test per-class F1", ", ".join(f"{k} {v:.2f}" for k, v in test["per_class_f1"].items())),
        ("peak memory", f"{result['peak_memory_mb']:.0f} MiB ({result['memory_source']})"),
        ("wall time / train time", f"{result['wall_time_s']:.1f} s / {result['train_time_s']:.1f} s"),
        ("train samples/s", result["train_samples_per_s"]),
        ("trainable share (mean/step)", f"{100 * result['trainable_share']:.2f}% of {result['total_params']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
