"""Deprecated alias of :mod:`headprune.agents.policy_network` (the policy network's old module name).

Run folders saved before the rename name this module in their SB3 ``model.zip``; it stays for one release
so they keep loading.
"""

from __future__ import annotations

from headprune.agents.policy_network import *  # noqa: F403
from headprune.agents.policy_network import __all__  # noqa: F401
