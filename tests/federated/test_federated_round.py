"""One whole round through the public interfaces: sites prepare and mask, the hub unmasks the sum,
decodes it and applies the strategy -- and gets what plain FedAvg on the raw deltas would give."""

import numpy as np

from evaluator.federated.client_update import prepare_site_update
from evaluator.federated.secagg import RoundParams, SecAggClient, SecAggServer, default_threshold
from evaluator.federated.strategies import get_strategy, mean_update
from evaluator.federated.updates import dequantize, flatten, max_bits_for_sites, quantization_error_bound


def test_secure_round_matches_plain_fedavg_within_the_quantization_bound():
    rng = np.random.default_rng(50)
    n, clip = 4, 1.0
    bits = max_bits_for_sites(n)
    global_weights = {"w": rng.normal(size=(6, 5)).astype(np.float32), "b": np.zeros(6, dtype=np.float32)}
    trained = [
        {k: v + 0.01 * rng.normal(size=v.shape).astype(np.float32) for k, v in global_weights.items()}
        for _ in range(n)
    ]
    global_vec, layout = flatten(global_weights)

    vectors, reports = zip(
        *[
            prepare_site_update(
                old_weights=global_weights,
                new_weights=t,
                clip_norm=clip,
                noise_multiplier=0.0,
                n_sites=n,
                rng=rng,
                quantization_bits=bits,
            )
            for t in trained
        ],
        strict=True,
    )
    params = RoundParams(round_id="run-7/round-1", threshold=default_threshold(n), vector_length=layout.size)
    server = SecAggServer(params)
    clients = {i: SecAggClient(i, params) for i in range(1, n + 1)}
    for c in clients.values():
        server.receive_keys(c.advertise())
    for i, c in clients.items():
        server.receive_shares(i, c.share_keys(server.roster()))
    for i, c in clients.items():
        if i != 3:  # site 3 drops after sharing keys
            server.receive_masked_input(i, c.masked_input(vectors[i - 1], server.bundles_for(i)))
    request = server.unmask_request()
    for i in request.survivors:
        server.receive_unmask_response(clients[i].unmask_shares(request))
    survivors = sorted(request.survivors)

    q_range = reports[0].quantization_range
    update_sum = dequantize(server.aggregate(), clip_norm=q_range, bits=bits, n_summed=len(survivors))
    new_global = get_strategy("fedavg").aggregate(
        global_vec, mean_update(update_sum, len(survivors)), len(survivors)
    )

    plain_deltas = [flatten(trained[i - 1])[0] - global_vec for i in survivors]
    expected = global_vec + np.mean(plain_deltas, axis=0)
    bound = quantization_error_bound(clip_norm=q_range, bits=bits, n_summed=len(survivors)) / len(survivors)
    assert np.abs(new_global - expected).max() <= bound
