"""Build step of the wheel: the catalogue ships inside the `shared` package.

`config/catalogue.yaml` stays the one source; building copies it to `shared/catalogue.yaml` in
the build tree, so an installed `arena` finds it as package data (see shared/paths.py). All
other metadata is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOGUE = Path(__file__).resolve().parent / "config" / "catalogue.yaml"


class BuildWithCatalogue(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads config/ in the checkout
            target = Path(self.build_lib) / "shared" / "catalogue.yaml"
            target.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(CATALOGUE), str(target))


setup(cmdclass={"build_py": BuildWithCatalogue})
