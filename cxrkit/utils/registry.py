"""A tiny name -> class registry (timm ``register_model`` style), shared by refiners and losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """A dict of registered classes that names the known entries when a lookup fails."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering the class under ``name`` (ValueError if already taken)."""

        def decorator(cls: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered ({getattr(self[name], '__name__', self[name])})")
            self[name] = cls
            return cls

        return decorator

    def lookup(self, name: str) -> T:
        """The class registered as ``name``; ValueError listing the known names otherwise."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {sorted(self)}")
        return self[name]
