import uuid

from django.db import migrations, models


def fill_uids(apps, schema_editor):
    """Give each existing server its own uid (a field default is one value for all rows)."""
    VirtualServer = apps.get_model("sipnodes", "VirtualServer")
    for server in VirtualServer.objects.filter(uid__isnull=True).only("pk"):
        server.uid = uuid.uuid4()
        server.save(update_fields=["uid"])


class Migration(migrations.Migration):
    dependencies = [
        ("sipnodes", "0003_virtualserver_digest_algorithms"),
    ]

    # Workers already running keep keying their live state by `id-<id>` until their config is
    # re-rendered and they restart (sipnodes.engine.config, `server_uid`).
    operations = [
        migrations.AddField(
            model_name="virtualserver",
            name="uid",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(fill_uids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="virtualserver",
            name="uid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
