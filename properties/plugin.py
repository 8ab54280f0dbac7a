"""The battery's pytest plugin: hypothesis profiles, command-line options, the implementation under test,
and the fixtures of the implementation under test. It loads no checker code: the verdict recorder
(`--attention-report FILE`) is the checker's own plugin, `-p properties.checker.verdicts`.

The repository's conftest.py loads it; `attention-check` passes it with `-p properties.plugin`, so the
battery also runs from a regular install, from any directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable

from attention.rows import scaled_dot_product_attention
from properties.catalogues.registry import NotALaw, category_of_item
from properties.helpers.autograd import autograd_backward
from properties.helpers.backward import Backward, NotebookBackward, RowBackward
from properties.helpers.flash_convention import (
    FlashImplementation,
    MergeImplementation,
    VarlenImplementation,
    flash_implementation,
    sdpa_shim,
)
from properties.helpers.implementations import (
    REFERENCE,
    REFERENCE_MULTIHEAD,
    REFERENCE_SOFTMAX,
    SET_ASIDE,
    FunctionUnderTest,
    Implementation,
    Multihead,
    Softmax,
)
from properties.helpers.loading import load_function
from properties.helpers.options import (
    ALIGNMENTS,
    ARRAYS,
    BACKWARD_REFERENCE_TARGETS,
    CONVENTIONS,
    DTYPES,
    FLASH_REFERENCE_TARGET,
    GENERATION,
    KINDS,
    LAYOUTS,
    MARKERS,
    MERGE_REFERENCE_TARGET,
    REFERENCE_TARGETS,
    SDPA_REFERENCE_TARGET,
    SUITES,
    VARLEN_REFERENCE_TARGET,
    Kind,
)
from properties.helpers.row_convention import Convention, SdpaImplementation, sdpa_implementation
from properties.helpers.sibling_examples import PLUGIN_NAME as SIBLINGS
from properties.helpers.sibling_examples import SiblingExamples

# Profiles. Numerical examples have no meaningful deadline; `ci` extends hypothesis's built-in ci
# profile (derandomised, no example database), which hypothesis selects by itself when CI is set.
settings.register_profile("dev", max_examples=20, deadline=None)
settings.register_profile(
    "ci", settings.get_profile("ci"), max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
if "HYPOTHESIS_PROFILE" in os.environ:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
elif settings.get_current_profile_name() == "ci":
    settings.load_profile("ci")  # the extended one registered above
else:
    settings.load_profile("dev")

IMPLEMENTATIONS = pytest.StashKey[list[Implementation]]()
KERNELS = pytest.StashKey[list[SdpaImplementation]]()  # the row-convention kernel, or none
FLASH = pytest.StashKey[list[FlashImplementation]]()  # the kernel of the rectangular laws, or none


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attention", "attention-properties")
    group.addoption(
        "--impl",
        default=os.environ.get("ATTENTION_IMPL"),
        metavar="TARGET",
        help="implementation to check: package.module:function or path/to/file.py:function "
        "(default: $ATTENTION_IMPL, else both reference functions)",
    )
    group.addoption(
        "--impl-kind",
        default="scaled",
        choices=KINDS,
        help="which notebook function TARGET is: scaled (eq. 12.9, default) or unscaled (eq. 12.8)",
    )
    group.addoption(
        "--softmax",
        default=None,
        metavar="TARGET",
        help="column softmax to check with the softmax laws (default: the reference's, unless --impl is given)",
    )
    group.addoption(
        "--multihead",
        default=None,
        metavar="TARGET",
        help="multi-head attention to check, f(X, heads, omega_c) (default: the reference's, unless --impl is given)",
    )
    group.addoption(
        "--backward",
        default=None,
        metavar="TARGET",
        help="backward pass of TARGET to check with the gradient laws: backward(query, key, value, d_out, **keywords) "
        "-> (d_query, d_key, d_value) under --convention sdpa, else backward(X, omega_v, ..., beta_k, d_X_prime, "
        "**keywords) -> the cotangents of X, omega_v, ..., beta_k (default: the reference's, unless --impl is given)",
    )
    group.addoption(
        "--gradients",
        action="store_true",
        default=False,
        help="check the gradients of --impl TARGET taken by its array library's autograd (jax.vjp, torch.autograd) "
        "with the gradient laws: --convention sdpa --array jax or torch",
    )
    group.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run the tests marked slow (subprocesses: the CLI end to end, grading workers), which the "
        "default run deselects; so does a -m expression that names slow",
    )
    group.addoption(
        "--suite",
        default=None,
        choices=SUITES,
        help="battery: the laws and golden values on the implementation under test (the default when pytest runs "
        "its testpaths without -m); full: also the battery's meta-tests (marked meta) and, in the repository, the "
        "project's tests (tests/), the default when paths, a -m expression or --run-slow are given",
    )
    group.addoption("--square", action="store_true", default=False, help="draw only D_q = D_v = D (the notebook's)")
    group.addoption(
        "--convention",
        default="notebook",
        choices=CONVENTIONS,
        help="how TARGET is called: notebook (f(X, omega_v, ..., beta_k), default), sdpa (f(query, key, value, "
        "attn_mask=/mask=, is_causal=, scale=, bias=), rows with batch and heads) or flash (flash_attn_func(q, k, v, "
        "dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, ...), (batch, length, heads, width))",
    )
    group.addoption("--layout", default=None, choices=LAYOUTS, help="sdpa: axis order of q, k, v (default BHLE)")
    group.addoption(
        "--array", default=None, choices=ARRAYS, help="sdpa, flash: the array library of q, k, v (default numpy)"
    )
    group.addoption("--dtype", default=None, choices=DTYPES, help="sdpa, flash: the dtype of q, k, v (default float64)")
    group.addoption(
        "--causal-alignment",
        default=None,
        choices=ALIGNMENTS,
        help="sdpa, flash: where causal puts the triangle when L != S: top-left (query n sees keys m <= n, torch) or "
        "bottom-right (m <= n + S - L, FlashAttention); default: the convention's (sdpa top-left, flash bottom-right)",
    )
    group.addoption(
        "--varlen",
        default=None,
        metavar="TARGET",
        help="packed-batch kernel to check, flash_attn_varlen_func's signature (default: the bundled one, unless "
        "--impl is given)",
    )
    group.addoption(
        "--merge",
        default=None,
        metavar="TARGET",
        help="log-sum-exp merge f(out_a, lse_a, out_b, lse_b) -> (out, lse) to check (default: the bundled one, "
        "unless --impl is given)",
    )


def _load(target: str, option: str) -> Callable[..., Any]:
    try:
        return load_function(target)
    except Exception as error:
        raise pytest.UsageError(f"{option} {target}: {error}") from error


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    GENERATION.square = bool(config.getoption("--square"))
    # Under pytest-benchmark's --benchmark-only every law skips by request: that run measures, it checks nothing.
    if not config.getoption("--benchmark-only", default=False):
        config.pluginmanager.register(LawOutcomes(), "attention-law-outcomes")
        # A law's later parametrisations replay the examples its first one met (`-p no:` + the name turns it off).
        config.pluginmanager.register(SiblingExamples(), SIBLINGS)
    target = config.getoption("--impl")
    kernel = _kernel(config)
    if config.getoption("--backward") and not target:
        raise pytest.UsageError("--backward TARGET goes with --impl TARGET, the forward it differentiates")
    if config.getoption("--gradients"):
        if config.getoption("--backward"):
            raise pytest.UsageError("--gradients and --backward: the gradients come from one of them, not both")
        if not target or kernel is None or kernel.convention.array not in ("jax", "torch"):
            raise pytest.UsageError("--gradients: --impl TARGET --convention sdpa --array jax or torch (autograd)")
    flash = _flash(config, kernel)
    config.stash[FLASH] = [] if flash is None else [flash]
    if config.getoption("--convention") == "flash" and flash is not None:
        shim = sdpa_shim(flash)
        kernel = SdpaImplementation(shim, config.getoption("--impl-kind"), flash.name,
                                    Convention("BLHE", flash.convention.array, flash.convention.dtype))  # fmt: skip
    config.stash[KERNELS] = [] if kernel is None else [kernel]
    if config.getoption("--convention") in ("sdpa", "flash") and kernel is not None:
        config.stash[IMPLEMENTATIONS] = list[Implementation]([kernel])
    elif target:
        kind = config.getoption("--impl-kind")
        config.stash[IMPLEMENTATIONS] = [Implementation(_load(target, "--impl"), kind, target)]
    else:
        config.stash[IMPLEMENTATIONS] = list(REFERENCE.values())


def _kernel(config: pytest.Config) -> SdpaImplementation | None:
    """The row-convention kernel of the sdpa laws: --impl under --convention sdpa, else (without --impl) the
    bundled numpy kernel; None for a notebook-convention --impl."""
    options = {name: config.getoption(f"--{name}") for name in ("layout", "array", "dtype")}
    convention = config.getoption("--convention")
    sdpa = convention == "sdpa"
    allowed = {"sdpa": set(options), "flash": {"array", "dtype"}}.get(convention, set())
    wrong = [f"--{name}" for name, value in options.items() if value and name not in allowed]
    if config.getoption("--causal-alignment") and convention == "notebook":
        wrong.append("--causal-alignment")
    if wrong:
        raise pytest.UsageError(f"{', '.join(wrong)}: not an option of --convention {convention}")
    if convention == "flash":
        return None  # built from the flash target (pytest_configure)
    target = config.getoption("--impl")
    if target and not sdpa:
        return None
    target = target or SDPA_REFERENCE_TARGET
    convention = Convention(**{name: value for name, value in options.items() if value})
    try:
        return sdpa_implementation(_load(target, "--impl"), target, convention, config.getoption("--impl-kind"))
    except ValueError as error:
        raise pytest.UsageError(f"--convention sdpa {target}: {error}") from error


def _flash(config: pytest.Config, kernel: SdpaImplementation | None) -> FlashImplementation | None:
    """The kernel of the rectangular laws: --impl under --convention flash (else the bundled flash_attn_func), the
    row-convention kernel under --convention sdpa, the bundled flash_attn_func without --impl; None for a
    notebook-convention --impl."""
    convention, alignment = config.getoption("--convention"), config.getoption("--causal-alignment")
    if convention == "sdpa" and kernel is not None:
        return FlashImplementation(kernel.function, kernel.name, kernel.convention, alignment or "top-left", "sdpa",
                                   kernel)  # fmt: skip
    target = config.getoption("--impl")
    if target and convention != "flash":
        return None
    target = target or FLASH_REFERENCE_TARGET
    choices = {name: value for name in ("array", "dtype") if (value := config.getoption(f"--{name}"))}
    try:
        return flash_implementation(_load(target, "--impl"), target, Convention("BLHE", **choices), alignment)
    except ValueError as error:
        raise pytest.UsageError(f"--convention flash {target}: {error}") from error


def pytest_report_header(config: pytest.Config) -> list[str]:
    names = ", ".join(f"{impl.name} ({impl.kind})" for impl in config.stash[IMPLEMENTATIONS])
    return [
        f"attention implementation under test: {names}",
        f"hypothesis profile: {settings.get_current_profile_name()}",
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "implementation" not in metafunc.fixturenames:
        return
    impls = metafunc.config.stash[IMPLEMENTATIONS]
    if "backward" in metafunc.fixturenames and not _backward_given(metafunc.config):
        pairs = [(impl, name, bw) for impl in impls for name, bw in default_backwards(metafunc.config, impl)]
        metafunc.parametrize(("implementation", "backward"), [(impl, bw) for impl, _, bw in pairs],
                             ids=[f"{impl.kind}-{name}" for impl, name, _ in pairs], scope="session")  # fmt: skip
        return
    metafunc.parametrize("implementation", impls, ids=[impl.kind for impl in impls], scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail the collection on a test function of a law module that is neither a law nor marked as something else
    (properties/catalogues/registry.py); under --impl, skip the battery's meta-tests (marked `meta`) and its checks of
    the bundled reference (marked `reference`): they test the battery and the reference, not TARGET.

    The reference's own tests (tests/) are skipped under --impl by their folder's conftest.py.
    """
    problems = []
    for item in items:
        try:
            category_of_item(item)
        except NotALaw as error:
            problems.append(str(error))
    if problems:
        raise pytest.UsageError("\n".join(dict.fromkeys(problems)))
    _deselect_slow(config, items)
    _select_suite(config, items)
    if not config.getoption("--impl"):
        return
    skips = {
        "meta": pytest.mark.skip(reason="a meta-test of the battery itself, not of --impl TARGET"),
        "reference": pytest.mark.skip(reason="a check of the bundled reference itself, not of --impl TARGET"),
    }
    for item in items:
        for marker, skip in skips.items():
            if item.get_closest_marker(marker):
                item.add_marker(skip)


def _deselect_slow(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests marked slow unless --run-slow is given or the -m expression names slow (`-m slow` runs
    them alone); a law is never marked slow (the registry's rule), so the battery itself is never cut."""
    if not (config.getoption("--run-slow") or "slow" in (config.getoption("-m") or "")):
        _deselect_marked(config, items, "slow")


def _deselect_marked(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    """Deselect the items marked `marker`, telling pytest (its summary counts them)."""
    marked = [item for item in items if item.get_closest_marker(marker)]
    if marked:
        config.hook.pytest_deselected(items=marked)
        items[:] = [item for item in items if not item.get_closest_marker(marker)]


def suite(config: pytest.Config) -> str:
    """--suite, else battery when pytest collects its testpaths without a -m expression or --run-slow, else full."""
    chosen: str | None = config.getoption("--suite")
    if chosen:
        return chosen
    named = config.args_source != pytest.Config.ArgsSource.TESTPATHS
    return "full" if named or config.getoption("-m") or config.getoption("--run-slow") else "battery"


def _select_suite(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the battery suite, deselect the meta-tests: they check the battery, not the implementation under test
    (`pytest --suite full` runs them, as CI does; the repository's conftest.py leaves tests/ uncollected)."""
    if suite(config) == "battery":
        _deselect_marked(config, items, "meta")


def _under_test(config: pytest.Config, option: str, what: str, reference: FunctionUnderTest) -> Any:
    """The function given with `option`, else the reference's; skips under --impl when none was given."""
    target = config.getoption(option)
    if target:
        return type(reference)(_load(target, option), target)
    if config.getoption("--impl"):
        pytest.skip(f"no {what} under test: pass {option} TARGET to check one")
    return reference


@pytest.fixture(scope="session")
def kernel(pytestconfig: pytest.Config) -> SdpaImplementation:
    """The row-convention kernel under test: --impl TARGET under --convention sdpa, else the bundled numpy kernel
    (skipped for a notebook-convention --impl)."""
    kernels = pytestconfig.stash[KERNELS]
    if not kernels:
        pytest.skip("a law of the row convention: pass --convention sdpa to check TARGET as f(query, key, value)")
    return kernels[0]


@pytest.fixture(scope="session")
def flash(pytestconfig: pytest.Config) -> FlashImplementation:
    """The kernel of the rectangular laws (L != S): --impl TARGET under --convention flash or sdpa, else the bundled
    flash_attn_func (skipped for a notebook-convention --impl)."""
    kernels = pytestconfig.stash[FLASH]
    if not kernels:
        pytest.skip("a law of rectangular kernels: pass --convention flash (or sdpa) to check TARGET as one")
    return kernels[0]


@pytest.fixture(scope="session")
def varlen(pytestconfig: pytest.Config) -> VarlenImplementation:
    """The packed-batch kernel under test: --varlen TARGET, else the bundled one (not under --impl)."""
    target = pytestconfig.getoption("--varlen")
    if not target and pytestconfig.getoption("--impl"):
        pytest.skip("no packed-batch kernel under test: pass --varlen TARGET to check one")
    target = target or VARLEN_REFERENCE_TARGET
    return VarlenImplementation(_load(target, "--varlen"), target)


@pytest.fixture(scope="session")
def merge(pytestconfig: pytest.Config) -> MergeImplementation:
    """The log-sum-exp merge under test: --merge TARGET, else the bundled one (not under --impl)."""
    target = pytestconfig.getoption("--merge")
    if not target and pytestconfig.getoption("--impl"):
        pytest.skip("no merge under test: pass --merge TARGET to check one")
    target = target or MERGE_REFERENCE_TARGET
    return MergeImplementation(_load(target, "--merge"), target)


@pytest.fixture(scope="session")
def softmax(pytestconfig: pytest.Config) -> Softmax:
    """The column softmax under test: --softmax TARGET, else the reference's (not under --impl)."""
    result: Softmax = _under_test(pytestconfig, "--softmax", "column softmax", REFERENCE_SOFTMAX)
    return result


@pytest.fixture(scope="session")
def multihead(pytestconfig: pytest.Config) -> Multihead:
    """The multi-head attention under test: --multihead TARGET, else the reference's (not under --impl)."""
    result: Multihead = _under_test(pytestconfig, "--multihead", "multi-head attention", REFERENCE_MULTIHEAD)
    return result


def reference_backward(convention: str, kind: Kind) -> Backward:
    """The bundled backward pass of a convention ("sdpa": the row kernel's; "notebook": the vjp of the kind)."""
    target = BACKWARD_REFERENCE_TARGETS[convention, kind]
    if convention == "sdpa":
        return RowBackward(load_function(target), target, scaled_dot_product_attention, SDPA_REFERENCE_TARGET, kind)
    return NotebookBackward(load_function(target), target, REFERENCE[kind].function, REFERENCE_TARGETS[kind], kind)


def default_backwards(config: pytest.Config, implementation: Implementation) -> list[tuple[str, Backward]]:
    """pytest's backward passes without --impl, --backward or --gradients, with their ids: under a row convention
    the row kernel's; else the notebook vjp of the implementation's kind and, for the scaled kind, the row kernel's
    too (so that the gradient laws reach both of the reference's backward code paths)."""
    kind = implementation.kind
    if config.getoption("--convention") != "notebook":
        return [("sdpa", reference_backward("sdpa", kind))]
    conventions = ("sdpa", "notebook") if kind == "scaled" else ("notebook",)
    return [(convention, reference_backward(convention, kind)) for convention in conventions]


def _backward_given(config: pytest.Config) -> bool:
    return bool(config.getoption("--impl") or config.getoption("--backward") or config.getoption("--gradients"))


@pytest.fixture(scope="session")
def backward(pytestconfig: pytest.Config, implementation: Implementation) -> Backward:
    """The backward pass under test: --backward TARGET, differentiating the implementation (--impl TARGET) in
    its convention (under --convention sdpa on the arrays of its --array, --layout and --dtype); with --gradients,
    the implementation's gradients by its array library's autograd; else the reference's backward of the reference
    implementation (skipped under --impl)."""
    if pytestconfig.getoption("--gradients") and isinstance(implementation, SdpaImplementation):
        return autograd_backward(implementation)
    target = pytestconfig.getoption("--backward")
    if not target:
        if pytestconfig.getoption("--impl"):
            pytest.skip("no backward pass under test: pass --backward TARGET to check one")
        return default_backwards(pytestconfig, implementation)[0][1]
    function = _load(target, "--backward")
    if isinstance(implementation, SdpaImplementation):
        return RowBackward(function, target, implementation.function, implementation.name, implementation.kind,
                           implementation.convention)  # fmt: skip
    return NotebookBackward(function, target, implementation.function, implementation.name, implementation.kind)


class LawOutcomes:
    """Counts the laws' outcomes (a law: a test with a category marker, not a meta-test or a benchmark) and, when
    laws were selected and every one of them skipped, says in the terminal summary that nothing was checked."""

    def __init__(self) -> None:
        self.outcomes: dict[str, set[str]] = {}  # a law's nodeid -> its reports' outcomes

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.outcomes = {item.nodeid: set() for item in items if self.is_law(item)}

    @staticmethod
    def is_law(item: pytest.Item) -> bool:
        """The registry's rule (a test of a law module with one category marker); a test that breaks the rule is
        reported by pytest_collection_modifyitems, not counted here."""
        try:
            return category_of_item(item) is not None
        except NotALaw:
            return False

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        """A law whose every drawn problem was set aside (beyond the range of the dtype the function returns)
        skips, naming why, instead of failing as unsatisfiable."""
        SET_ASIDE.clear()
        try:
            return (yield)
        except Unsatisfiable:
            if not SET_ASIDE:
                raise
            reasons = "; ".join(f"{reason} ({n} problems)" for reason, n in SET_ASIDE.items())
            pytest.skip(f"every problem drawn was set aside: {reasons}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid in self.outcomes and (report.when == "call" or report.outcome != "passed"):
            self.outcomes[report.nodeid].add(report.outcome)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        ran = [found for found in self.outcomes.values() if found]
        if ran and all(found == {"skipped"} for found in ran):
            terminalreporter.write_sep("=", "attention-properties: NOT CHECKED", yellow=True)
            terminalreporter.write_line(
                f"every one of the {len(ran)} laws selected skipped: no law was checked on the function under test "
                "(pytest -rs shows why)"
            )
