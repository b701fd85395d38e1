"""Each server has a uid that is never reused: the migration gives existing servers one each."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from sipnodes.models import VirtualServer

BEFORE = [("sipnodes", "0003_virtualserver_digest_algorithms")]
AFTER = [("sipnodes", "0004_virtualserver_uid")]


@pytest.mark.django_db(transaction=True)
def test_existing_servers_get_distinct_uids(tenant_a, tenant_b):
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps.get_model("sipnodes", "VirtualServer")
    assert not hasattr(old.objects.get(pk=tenant_a.server.pk), "uid")
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(AFTER)
        new = executor.loader.project_state(AFTER).apps.get_model("sipnodes", "VirtualServer")
        uids = list(new.objects.values_list("uid", flat=True))
        assert len(uids) == 2 and None not in uids and len(set(uids)) == 2
        with pytest.raises(IntegrityError), transaction.atomic():  # unique
            new.objects.filter(pk=tenant_b.server.pk).update(uid=uids[0])
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())  # every app: ops depends on sipnodes


def test_a_new_server_has_its_own_uid_which_is_not_editable(tenant_a, tenant_b):
    assert tenant_a.server.uid and tenant_a.server.uid != tenant_b.server.uid
    assert not VirtualServer._meta.get_field("uid").editable
