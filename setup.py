"""Maps the top-level folders onto the one `facefleet` import namespace (the rest is in pyproject.toml)."""

from setuptools import find_packages, setup

FOLDERS = ("core", "vision", "link", "agent", "server")
package_dir = {"facefleet": "protos/facefleet"}
packages = ["facefleet", *(f"facefleet.{name}" for name in find_packages("protos/facefleet"))]
for folder in FOLDERS:
    package_dir[f"facefleet.{folder}"] = folder
    packages += [f"facefleet.{folder}", *(f"facefleet.{folder}.{sub}" for sub in find_packages(folder))]

setup(package_dir=package_dir, packages=packages)
