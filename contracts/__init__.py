"""capnas.contracts: what a valid model is. Contract data, static checks, the dynamic probe, violation codes.

Imports only pydantic and the standard library at package level; torch is imported by `probe` alone."""

from capnas.contracts.caption_net_v1 import caption_net_v1
from capnas.contracts.contract import Budgets, Clause, Contract, SpecialIds, Violation
from capnas.contracts.static_checks import check_file, check_source, must_stop

CONTRACTS = {"caption-net-v1": caption_net_v1}


def get_contract(name: str, **task: object) -> Contract:
    """Build a named contract for a task, e.g. get_contract("caption-net-v1", vocab_size=300, image_size=64)."""
    try:
        factory = CONTRACTS[name]
    except KeyError:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(sorted(CONTRACTS))}") from None
    return factory(**task)  # type: ignore[arg-type]


__all__ = [
    "Budgets", "Clause", "Contract", "SpecialIds", "Violation", "CONTRACTS", "caption_net_v1", "check_file",
    "check_source", "get_contract", "must_stop",
]
