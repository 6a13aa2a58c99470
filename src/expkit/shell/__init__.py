"""Commands on many nodes at once, over the OpenSSH client (ClusterShell's job).

>>> from expkit.shell import NodeSet, run
>>> result = run("uname -r", NodeSet("node[1-4]"), timeout=60)  # doctest: +SKIP
>>> for text, nodes in result.iter_buffers():  # doctest: +SKIP
...     print(nodes, text)

``import expkit`` does not import this package; it uses the standard library only.
"""

from __future__ import annotations

from ._copy import copy, rcopy
from ._nodeset import NodeSet, NodeSetError, expand, fold
from ._result import ShellResult
from ._run import run

__all__ = ["NodeSet", "NodeSetError", "ShellResult", "copy", "expand", "fold", "rcopy", "run"]
