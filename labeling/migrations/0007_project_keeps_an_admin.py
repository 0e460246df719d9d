"""A project always keeps an admin: a rule of the database, on PostgreSQL.

Removing or demoting a project's last admin left it with nobody to manage it and no way back but
the shell (two admins removing each other at once did it: each saw the other still there). The
services take turns on the project's row lock (services/projects.py); this trigger holds whatever
code runs (the Django admin, a shell, a second process).

A deferred constraint trigger, checked at COMMIT, when the transaction's other changes are in: a
project deleted with its members, or an admin handing over to a new one, pass. It takes the
project's row lock before counting, as the services do, so that of two transactions that each
remove an admin the second counts after the first committed (READ COMMITTED: a statement sees
what committed before it started); without the lock both would count the other's admin, pass, and
commit. An error of class 23 is Django's IntegrityError.

Not on SQLite: it has no deferred triggers, and Django deletes a project's memberships before the
project, so a trigger checked at once would refuse to delete any project. SQLite serialises
writers (settings: BEGIN IMMEDIATE), so the services' check holds there on its own.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION labeling_membership_keeps_an_admin() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM labeling_project WHERE id = OLD.project_id FOR NO KEY UPDATE;
    IF FOUND AND NOT EXISTS (
        SELECT 1 FROM labeling_membership WHERE project_id = OLD.project_id AND role = 'admin'
    ) THEN
        RAISE EXCEPTION 'project % would have no admin', OLD.project_id
            USING ERRCODE = 'integrity_constraint_violation',
                  CONSTRAINT = 'membership_project_keeps_an_admin';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER membership_project_keeps_an_admin_on_delete
    AFTER DELETE ON labeling_membership
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.role = 'admin')
    EXECUTE FUNCTION labeling_membership_keeps_an_admin();

CREATE CONSTRAINT TRIGGER membership_project_keeps_an_admin_on_update
    AFTER UPDATE OF role, project_id ON labeling_membership
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.role = 'admin' AND (NEW.role <> 'admin' OR NEW.project_id <> OLD.project_id))
    EXECUTE FUNCTION labeling_membership_keeps_an_admin();
"""

DROP = """
DROP TRIGGER membership_project_keeps_an_admin_on_update ON labeling_membership;
DROP TRIGGER membership_project_keeps_an_admin_on_delete ON labeling_membership;
DROP FUNCTION labeling_membership_keeps_an_admin();
"""


def _on_postgres(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)  # no placeholders: "%" is plpgsql's

    return run


class Migration(migrations.Migration):
    dependencies = [("labeling", "0006_project_flags_may_be_empty")]

    operations = [migrations.RunPython(_on_postgres(CREATE), _on_postgres(DROP))]
