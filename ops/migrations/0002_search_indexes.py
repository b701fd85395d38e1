# The operator's server and tenant search (`name__icontains`, i.e. UPPER(name) LIKE
# '%...%') served by trigram indexes, so it stays fast at a million servers. PostgreSQL
# only: the embedded SQLite database has no pg_trgm and scans instead.

from django.db import migrations

INDEXES = {
    "ops_vs_name_trgm_idx": "sipnodes_virtualserver",
    "ops_tenant_name_trgm_idx": "tenants_tenant",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table in INDEXES.items():
        schema_editor.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin ((UPPER("name"::text)) gin_trgm_ops)'
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):

    dependencies = [
        ("ops", "0001_zombie_purge"),
        ("tenants", "0002_member_language_tenant_time_zone"),
    ]

    operations = [migrations.RunPython(create, drop)]
