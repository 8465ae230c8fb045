"""The layout docs/architecture.md describes, checked: small modules and functions, no import cycle,
job code that loads without boto3, no AWS client call outside labkit/aws/."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SOURCES = sorted(p for d in ("labkit", "worker") for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)
# The code beside a notebook (notebooks/*.py: the delivery exercise, the example kinds) keeps the size rules too.
BESIDE_NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.py") if "__pycache__" not in p.parts)
MAX_LINES, MAX_FUNCTION = 500, 80
AWS_CALL = re.compile(r"\.(sqs|s3)\.[a-z_]+\(|clients\(\"[a-z0-9]+\"\)\.[a-z_]+\(|\.get_paginator\(")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """labkit/worker modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else []:
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    parts = package.split(".")[: len(package.split(".")) - sub.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                out.add(base)
                out |= {f"{base}.{a.name}" for a in sub.names}
    return {m for m in out if m.split(".")[0] in ("labkit", "worker")}


def test_no_module_over_500_lines_and_no_function_over_80():
    sizes = {p: len(p.read_text().splitlines()) for p in SOURCES + BESIDE_NOTEBOOKS}
    long_files = [f"{p.relative_to(ROOT)} ({n} lines)" for p, n in sizes.items() if n > MAX_LINES]
    long_functions = []
    for p in SOURCES + BESIDE_NOTEBOOKS:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    long_functions.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long_files, long_files
    assert not long_functions, long_functions


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n in graph and not state.get(n):
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    modules = {module_name(p): p for p in SOURCES}
    graph = {m: {i for i in top_level_imports(p) if i in modules and i != m} for m, p in modules.items()}
    # A package imports its own modules to re-export them; that is not a cycle back from them.
    for m in graph:
        graph[m] = {i for i in graph[m] if not (modules[m].name == "__init__.py" and i.startswith(m + "."))}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_check_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_clients_future_imports_nothing_of_the_fleet():
    # The fleet hooks in from outside (Lab.slow_hooks): not even a function of labkit/future.py imports it.
    tree = ast.parse((ROOT / "labkit" / "future.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
        {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not {m for m in imported if m == "labkit.fleet" or m.startswith("labkit.fleet.")}


@pytest.mark.parametrize("module", ["labkit.jobs.numbers", "labkit.jobs.images", "labkit.jobs.handlers",
                                    "labkit.kinds", "labkit.protocol", "labkit.keys"])
def test_core_modules_load_without_boto3(module):
    code = f"import sys, {module}; print(sorted(m for m in ('boto3', 'botocore', 'labkit.client') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_aws_clients_are_called_only_in_labkit_aws():
    # A call on a boto3 client looks like `<x>.sqs.<op>(`, `<x>.s3.<op>(` or `clients("ec2").<op>(`; handing
    # a client to a wrapper of labkit/aws (`Ec2(clients("ec2"))`) is how it should be.
    offenders = []
    for p in SOURCES:
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith("labkit/aws/"):
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if AWS_CALL.search(line.split("#", 1)[0]):
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_aws_call_check_sees_a_raw_call():
    assert AWS_CALL.search("lab.clients.sqs.delete_queue(QueueUrl=u)")
    assert AWS_CALL.search('clients("ec2").describe_instances()')
    assert not AWS_CALL.search('Ec2(clients("ec2"))')


FRONT_ENDS = ("labkit.cli", "labkit.widgets", "labkit.presenters", "labkit.unattended", "labkit.notebooks",
              "labkit.__main__")


def is_front_end(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FRONT_ENDS)


def test_no_library_module_imports_a_front_end():
    # The library (and core, transport) never imports a front end: what both the CLI and the widgets show is built
    # in labkit.presenters, which imports the library, not the other way round. The worker owns its command line
    # (worker.cli): `labkit worker` hands it its arguments, and nothing of the worker imports labkit.cli.
    offenders = {module_name(p): sorted(i for i in top_level_imports(p) if is_front_end(i)) for p in SOURCES
                 if not is_front_end(module_name(p))}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_front_end_check_knows_the_front_ends():
    assert is_front_end("labkit.presenters") and is_front_end("labkit.cli.doctor") and is_front_end("labkit.widgets")
    assert not is_front_end("labkit.doctor") and not is_front_end("labkit.classview")


# What a student's `from labkit import Lab` loads of labkit (docs/architecture.md, "What a student's import loads"):
# the client's own path. Code one path needs is imported inside the function that needs it (the cost tables, the
# local stack behind `status`, the numbers job's own code); code one notebook or command uses lives beside it.
LAB_IMPORTS = {
    "labkit", "labkit.aws", "labkit.aws.arns", "labkit.aws.clients", "labkit.aws.queues", "labkit.aws.storage",
    "labkit.background", "labkit.client", "labkit.config", "labkit.endpoints", "labkit.errors", "labkit.flow",
    "labkit.future", "labkit.journal", "labkit.keys", "labkit.kinds", "labkit.protocol", "labkit.provision",
    "labkit.replies", "labkit.timeline", "labkit.waiting",
}


def test_from_labkit_import_lab_loads_only_the_clients_path():
    code = "import sys; from labkit import Lab; print(' '.join(m for m in sys.modules if m.split('.')[0] in " \
           "('labkit', 'worker')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(out.stdout.split())
    assert (sorted(loaded - LAB_IMPORTS), sorted(LAB_IMPORTS - loaded)) == ([], []), \
        "(loaded and not listed, listed and not loaded): import it where it is used, or list it here and say why"


# One of each (issue 22): text that marks each of these, and the one module that may hold it. AWS's error code is
# read in labkit.errors (aws_error_code); a redrive policy is written and read in labkit.aws.queues; the table of
# image formats (content types, extensions, Pillow's names) is labkit.keys.IMAGE_FORMATS; an image job's payload
# is made by labkit.jobs.images.job_payload; a retry loop is labkit.waiting.tries.
ONE_OF_EACH = {
    re.compile(r"""\.get\(["']Error["']|\[["']Error["']\]"""): "labkit/errors.py",
    re.compile(r"maxReceiveCount"): "labkit/aws/queues.py",
    re.compile(r"""["']image/(jpeg|webp|gif|bmp|tiff)["']"""): "labkit/keys.py",
    re.compile(r"""\{["']bucket["']: [^}]*["']ops["']:"""): "labkit/jobs/images.py",
    re.compile(r"for \w+ in range\(attempts \+ 1\)|backoff \* 2|while True:\s*\n\s*try:\s*\n\s*return "):
        "labkit/waiting.py",
}


def one_of_each_offenders(sources: dict[str, str]) -> dict[str, list[str]]:
    """For each marker, the files other than its module that hold it."""
    return {mark.pattern: found for mark, home in ONE_OF_EACH.items()
            if (found := sorted(f for f, text in sources.items() if f != home and mark.search(text)))}


def test_one_of_each_lives_in_its_module():
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in SOURCES}
    assert one_of_each_offenders(sources) == {}


def test_the_one_of_each_check_sees_a_copy():
    copies = {"labkit/a.py": 'code = exc.response.get("Error", {}).get("Code")',
              "labkit/b.py": 'json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})',
              "labkit/c.py": '{".jpg": "image/jpeg"}', "labkit/d.py": '{"bucket": b, "key": k, "ops": ops}',
              "labkit/e.py": "while True:\n    try:\n        return call()\n    except OSError:\n        time.sleep(1)"}
    assert len(one_of_each_offenders(copies)) == len(ONE_OF_EACH)


def test_the_map_in_docs_architecture_names_what_exists_and_every_module():
    # Every labkit./worker. name docs/architecture.md writes resolves (a module, or a name in one), and every
    # module of labkit/ and worker/ (and every package) is named there: the map cannot drift from the code.
    doc = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"\b((?:labkit|worker)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)", doc))

    def resolves(dotted: str) -> bool:
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            path = ROOT.joinpath(*parts[:cut])
            source = path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"
            if source.exists():
                rest = parts[cut:]
                return not rest or re.search(rf"^(def|class) {rest[0]}\b|^{rest[0]}\b\s*[:=]|import .*\b{rest[0]}\b",
                                             source.read_text(), re.M) is not None
        return False

    assert not sorted(n for n in named if not resolves(n))
    modules = {module_name(p) for p in SOURCES if p.name != "__main__.py" and len(p.relative_to(ROOT).parts) == 2}
    modules |= {module_name(p) for p in SOURCES if p.name == "__init__.py" and len(p.relative_to(ROOT).parts) == 3}
    assert not sorted(m for m in modules - named if m not in ("labkit", "worker"))
