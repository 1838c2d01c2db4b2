"""What one release costs on a task, and the caps: derived from the task's settings alone,
never taken from a site or a client."""

from __future__ import annotations

from evaluator.privacy.zcdp import rho_for_epsilon


def release_cost(task) -> tuple[float, float, float]:
    """(rho, epsilon, delta) of one release on ``task``."""
    rho = rho_for_epsilon(task.dp_epsilon_per_release, task.dp_delta)
    return rho, task.dp_epsilon_per_release, task.dp_delta


def task_caps(task) -> tuple[float, float]:
    """The rho caps of (one vendor organization, all vendors together), per split."""
    return (
        rho_for_epsilon(task.dp_vendor_epsilon, task.dp_delta),
        rho_for_epsilon(task.dp_task_epsilon, task.dp_delta),
    )


def releases_that_fit(*, spent: float, cap: float, rho: float) -> int:
    """How many more releases of ``rho`` the conditional UPDATE would let through."""
    if rho <= 0:
        return 0
    n = max(int((cap - spent) // rho), 0)
    while n > 0 and spent + (n - 1) * rho > cap - rho:  # the same test as the reservation's
        n -= 1
    return n
