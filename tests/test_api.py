import deepids


def test_public_api_names_resolve():
    for name in deepids.__all__:
        assert getattr(deepids, name) is not None
    from deepids import LSTMAutoencoder, read_flows  # noqa: F401  (the documented import works)
