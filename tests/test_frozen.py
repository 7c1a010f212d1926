"""``evolve`` is ``dataclasses.replace``, faster, for the records planning copies."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from repvgg_onnx.algebra.affine_conv import affine_conv
from repvgg_onnx.algebra.evolve import evolve


@dataclasses.dataclass(frozen=True)
class Plain:
    a: int
    b: tuple = ()
    c: float = 0.5

    @functools.cached_property
    def total(self) -> float:
        return self.a + self.c


@dataclasses.dataclass(frozen=True)
class Checked:
    a: int

    def __post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("negative")


@dataclasses.dataclass
class Derived:
    a: int
    twice: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.twice = 2 * self.a


def test_a_plain_record_is_copied_with_its_changes():
    record = Plain(1, (2,), 3.0)
    copy = evolve(record, a=5)
    assert copy == dataclasses.replace(record, a=5) == Plain(5, (2,), 3.0)
    assert type(copy) is Plain and copy is not record
    assert record == Plain(1, (2,), 3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.a = 1  # type: ignore[misc]


def test_a_cached_property_is_not_carried_over():
    record = Plain(1, c=1.0)
    assert record.total == 2.0
    assert evolve(record, a=10).total == 11.0


@dataclasses.dataclass
class Counted:
    a: int
    uses: int = dataclasses.field(init=False, default=0)


def test_records_whose_init_does_more_go_through_replace():
    with pytest.raises(ValueError, match="negative"):
        evolve(Checked(1), a=-1)
    assert evolve(Derived(2), a=3).twice == 6
    counted = Counted(1)
    counted.uses = 4
    assert evolve(counted, a=2).uses == dataclasses.replace(counted, a=2).uses == 0


def test_an_unknown_field_is_refused_as_replace_refuses_it():
    with pytest.raises(TypeError):
        evolve(Plain(1), d=2)


def test_an_affine_conv_evolves_as_it_is_replaced():
    conv = affine_conv(np.ones((2, 2, 3, 3)), pads=[1, 1, 1, 1])
    kernel = np.zeros((2, 2, 3, 3))
    copy = evolve(conv, kernel=kernel, scale=np.ones(2))
    expected = dataclasses.replace(conv, kernel=kernel, scale=np.ones(2))
    for field in dataclasses.fields(conv):
        np.testing.assert_array_equal(getattr(copy, field.name), getattr(expected, field.name))
    assert copy.kernel is kernel and conv.scale is None


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    a: int
    b: int = 0


def test_a_record_with_slots_goes_through_replace():
    assert evolve(Slotted(1, 2), b=3) == Slotted(1, 3)
