"""Evaluation protocols as data: which (domain, split) parts train, select and test.

Names follow the lineage (SSDG, MMDG): sources, an underscore, targets.

- Leave-one-out (MMDG Protocol 1): ``CPS_W``, ``CPW_S``, ``CSW_P``, ``PSW_C``.
- Limited source (MMDG Protocol 3): ``CW_PS``, ``PS_CW``; the targets' test splits are pooled.
- Missing modality at test (MMDG Protocol 2): a leave-one-out name plus ``-no_depth``,
  ``-no_ir`` or ``-no_depth_ir``; training sees every modality, the test zeroes the named ones.

In every protocol: the sources' train splits train, the sources' val splits select (epoch,
hyperparameters, ``val_threshold``), the targets' test splits test. No target split is ever
read for training or selection; ``check_disjoint`` asserts it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rise_dist.data.cache import DOMAINS, MODALITIES

Part = tuple[str, str]  # (domain, split)


@dataclass(frozen=True)
class Protocol:
    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    missing_at_test: tuple[str, ...] = ()  # modalities zeroed at test time

    @property
    def train_parts(self) -> tuple[Part, ...]:
        return tuple((d, "train") for d in self.sources)

    @property
    def val_parts(self) -> tuple[Part, ...]:
        return tuple((d, "val") for d in self.sources)

    @property
    def test_parts(self) -> tuple[Part, ...]:
        return tuple((d, "test") for d in self.targets)

    @property
    def base(self) -> str:
        """The protocol without its missing-modality suffix (``CPS_W-no_ir`` -> ``CPS_W``)."""
        return self.name.split("-", 1)[0]

    def check_disjoint(self) -> None:
        """Raise if a target domain appears among the training or selection domains."""
        leak = set(self.targets) & set(self.sources)
        if leak:
            raise ValueError(f"protocol {self.name}: target domain(s) {sorted(leak)} also a source")


MISSING_VARIANTS = {"no_depth": ("depth",), "no_ir": ("ir",), "no_depth_ir": ("depth", "ir")}


def _build() -> dict[str, Protocol]:
    protocols = {}
    for target in ("W", "S", "P", "C"):
        sources = tuple(d for d in DOMAINS if d != target)
        name = f"{''.join(sources)}_{target}"
        protocols[name] = Protocol(name, sources, (target,))
        for suffix, dropped in MISSING_VARIANTS.items():
            protocols[f"{name}-{suffix}"] = Protocol(f"{name}-{suffix}", sources, (target,), dropped)
    protocols["CW_PS"] = Protocol("CW_PS", ("C", "W"), ("P", "S"))
    protocols["PS_CW"] = Protocol("PS_CW", ("P", "S"), ("C", "W"))
    for p in protocols.values():
        p.check_disjoint()
        assert set(p.missing_at_test) <= set(MODALITIES)
    return protocols


PROTOCOLS: dict[str, Protocol] = _build()
LEAVE_ONE_OUT: tuple[str, ...] = ("CPS_W", "CPW_S", "CSW_P", "PSW_C")


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name is an error listing the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


def parse_protocols(spec: str) -> tuple[Protocol, ...]:
    """``"all"`` (the four leave-one-out protocols) or a comma-separated list of names."""
    names = LEAVE_ONE_OUT if spec.strip() == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError("no protocol given; use 'all' or names such as CPS_W,CPW_S")
    return tuple(get_protocol(n) for n in names)
