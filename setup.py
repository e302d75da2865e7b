"""ament_python package: colcon build on a real ROS 2 install, or pip install into a venv."""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "gnesf_ros"


def tree(src: str) -> list[tuple[str, list[str]]]:
    """data_files entries that keep src/'s folder structure under share/<package>/src/."""
    out = []
    for folder, _, files in os.walk(src):
        keep = [os.path.join(folder, f) for f in files if f != "train_state.pt" and not f.endswith(".state.pt")]
        if keep:
            out.append((os.path.join("share", package_name, folder), keep))
    return out


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    package_data={"gnesf_ros": ["data/*.tsv"]},  # synthetic scenes: bundled ScanNet label map (H1b)
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
    ] + tree("models"),
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="gnesf_ros developers",
    maintainer_email="gnesf-ros@example.org",
    description="Online 3D semantic mapping (GNeSF) for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "gnesf-synth = gnesf_ros.cli.synth:main",
            "gnesf-eval = gnesf_ros.cli.evaluate:main",
            "gnesf-view = gnesf_ros.cli.view:main",
            "gnesf-train = gnesf_ros.cli.train:main",
            "gnesf-bag = gnesf_ros.cli.bag:main",
            "gnesf-map = gnesf_ros.cli.map:main",
            "gnesf-node = gnesf_ros.ros.node:main",
        ],
    },
)
