import pytest

from lightning_des.data.synthetic import SyntheticSpec
from lightning_des.distributed.substitution import NotSubstitutableError, OperatorCost, choose_operators, operator_costs
from lightning_des.models.recsys import DLRM, DeepFM, LogisticRegression, WideAndDeep

SCHEMA = SyntheticSpec(num_rows=10, num_dense=2, cardinalities=(10,) * 6).schema()


def test_operator_costs_follow_the_formulas():
    net = WideAndDeep(SCHEMA, embedding_dim=8, hidden=(32, 4)).net
    wide, deep = operator_costs(net, world_size=4, global_batch=100)
    assert (wide.partial_dim, wide.pooled_dim, wide.field_params) == (1, 6, 0)
    assert (deep.partial_dim, deep.pooled_dim, deep.field_params) == (32, 48, 6 * 8 * 32)
    assert deep.des_bytes == 2 * 3 * 32 * 100 * 4
    assert deep.table_wise_bytes == (2 * 3 / 4 * 48 * 100 + 2 * 3 * 6 * 8 * 32) * 4
    fm = operator_costs(DeepFM(SCHEMA, embedding_dim=8, hidden=(16,)).net, 2)[1]
    assert fm.partial_dim == 8 + 1 + 16  # sum v, sum ||v||^2, first layer
    assert OperatorCost("deep", 5, 40, 0, 2).describe().startswith("deep: DES 40 B/sample")


def test_choice_per_mode_and_operator_filter():
    lr = LogisticRegression(SCHEMA).net
    assert choose_operators(lr, 2, "auto")[0] == {"wide"}  # DES 2(N-1) = 2 < table-wise 2(N-1)/N F = 6
    assert choose_operators(lr, 8, "auto")[0] == set()  # 14 > 10.5: with F < N table-wise is cheaper
    wdl = WideAndDeep(SCHEMA, embedding_dim=4, hidden=(512,)).net
    assert choose_operators(wdl, 2, "auto")[0] == {"wide"}  # per sample: H=512 > 6*4/2
    assert choose_operators(wdl, 2, "des")[0] == {"wide", "deep"}
    assert choose_operators(wdl, 2, "des", allowed=["deep"])[0] == {"deep"}
    assert choose_operators(wdl, 2, "torchrec")[0] == set()
    with pytest.raises(ValueError, match=r"unknown DES operators \['first'\]"):
        choose_operators(wdl, 2, "des", allowed=["first"])


def test_dlrm_is_not_substitutable():
    net = DLRM(SCHEMA, embedding_dim=4).net
    with pytest.raises(NotSubstitutableError, match="DLRMHead has no equivalent DES split"):
        choose_operators(net, 2, "des")
    assert choose_operators(net, 2, "auto")[0] == set()
