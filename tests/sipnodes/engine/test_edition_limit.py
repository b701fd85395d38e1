"""A lower client limit read on SIGHUP (an edition downgrade), as the registrar applies it.

What the operator is told when an edition goes below the clients registered now: they stay
registered and keep refreshing; no new client registers until fewer than the limit are.
"""

from .helpers import T0, Pbx, make_config

USERS = [str(n) for n in range(100, 114)]


def test_clients_over_a_lowered_limit_stay_and_new_ones_wait_until_below_it():
    pbx = Pbx(max_clients=20, users=USERS)
    phones = [pbx.registered(number, 6000 + 2 * i) for i, number in enumerate(USERS[:12])]
    short_lived = phones[3]
    assert short_lived.register(T0, expires=60).code == 200

    pbx.engine.reload(make_config(max_clients=10, users=USERS), T0 + 1)
    assert pbx.engine.location.registered_clients() == 12
    assert "unregister" not in [e["action"] for e in pbx.events("registration")]

    # Every client registered before keeps refreshing, and may add a device.
    for phone in phones:
        if phone is not short_lived:
            assert phone.register(T0 + 2).code == 200
    assert pbx.phone("100", 7000).register(T0 + 2).code == 200
    newcomer = pbx.phone("112", 6100)
    refused = newcomer.register(T0 + 2)
    assert (refused.code, refused.phrase) == (403, "Forbidden - client limit of 10 reached")

    # Two unregister: 10 are left, still not fewer than the limit.
    for phone in phones[1:3]:
        assert phone.register(T0 + 3, expires=0).code == 200
    assert pbx.engine.location.registered_clients() == 10
    assert newcomer.register(T0 + 3).code == 403

    # One registration expires: 9, so one newcomer gets in and the server is full again.
    pbx.net.timer(T0 + 62)
    assert pbx.engine.location.registered_clients() == 9
    assert newcomer.register(T0 + 62).code == 200
    assert pbx.phone("113", 6102).register(T0 + 62).code == 403
