"""A plugin whose import fails."""

import calbridge_dependency_that_is_not_installed  # type: ignore[import-not-found]  # noqa: F401
