"""The package imports and reports one version."""

import engine
import miredoctl


def test_versions_agree():
    assert engine.__version__ == miredoctl.__version__
