"""What a grading process need not pay for at start, and does not.

Every process that reads a notebook imports nbformat, hence jsonschema, whose optional IRI
format checker (rfc3987-syntax, which Jupyter's server installs) compiles a grammar at
import: ~2.5 s of CPU in the grader, in every nbgrader process and every grading worker,
for a string format no notebook schema uses. `defer_iri_grammar`, called in the grader's
processes that read notebooks (never in a student's kernel), puts a stand-in in its place
that imports the real module the first time it is used: the same answers, paid for only
when asked.

A new nbgrader gradebook learns its schema's version by running ``alembic heads`` in a
process of its own, which imports nbgrader all over again (~6 s of CPU, for every class
graded and every release). `alembic_head` reads the same version from nbgrader's migration
scripts in this process; `use_alembic_head_in_process` has nbgrader's gradebook ask it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types

IRI_MODULE = "rfc3987_syntax"


def defer_iri_grammar() -> None:
    """Stand in for rfc3987_syntax until it is used (nothing to do when it is not installed
    or already imported)."""
    if IRI_MODULE in sys.modules:
        return
    spec = importlib.util.find_spec(IRI_MODULE)
    if spec is None:
        return
    stand_in = types.ModuleType(IRI_MODULE, "rfc3987_syntax, imported at its first use")
    stand_in.__path__ = list(spec.submodule_search_locations or [])
    stand_in.__deferred__ = True

    def is_valid_syntax(term: str, value: str) -> bool:
        return _real_iri_module().is_valid_syntax(term, value)

    def __getattr__(name: str):
        if name.startswith("__"):  # what introspection asks of every module: not a use
            raise AttributeError(name)
        return getattr(_real_iri_module(), name)

    stand_in.is_valid_syntax = is_valid_syntax  # what jsonschema takes from it at import
    stand_in.__getattr__ = __getattr__
    stand_in.__file__ = spec.origin
    sys.modules[IRI_MODULE] = stand_in


def _real_iri_module() -> types.ModuleType:
    module = sys.modules.get(IRI_MODULE)
    if module is None or getattr(module, "__deferred__", False):
        sys.modules.pop(IRI_MODULE, None)
        module = importlib.import_module(IRI_MODULE)
    return module


@functools.cache
def alembic_head() -> str:
    """The revision at the head of nbgrader's gradebook migrations: what ``alembic heads``
    prints first, read in this process."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    config = Config()
    config.set_main_option("script_location", ALEMBIC_DIR)
    return ScriptDirectory.from_config(config).get_current_head()


def prepare_nbgrader() -> None:
    """Both, before nbgrader is imported: what an nbgrader process of the grader calls first."""
    defer_iri_grammar()
    use_alembic_head_in_process()


def use_alembic_head_in_process() -> None:
    """Have nbgrader's `Gradebook` take a new database's version from `alembic_head`."""
    import nbgrader.api

    nbgrader.api.get_alembic_version = alembic_head
