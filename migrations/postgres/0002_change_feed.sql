-- The change feed (Postgres only; docs/change-feed.md).
--
-- A trigger on each watched table writes every row change to switchyard_change_outbox and
-- NOTIFYs 'switchyard_changes' as a wake-up. The PgChangeListener on the node that holds the
-- feed's advisory lock relays the outbox in id order and marks rows relayed after publishing, so a
-- change made while no listener runs waits in the outbox instead of being lost (the seed's bare
-- NOTIFY lost it).

CREATE TABLE switchyard_change_outbox (
    id          BIGSERIAL PRIMARY KEY,
    table_name  TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    -- INSERT, UPDATE or DELETE.
    operation   TEXT NOT NULL,
    -- The row's tenant_key column, when the table has one.
    tenant_key  TEXT,
    -- The row after the change (before it, for deletes).
    row_data    JSONB,
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    relayed_at  TIMESTAMPTZ
);

CREATE INDEX switchyard_change_outbox_pending ON switchyard_change_outbox (id)
    WHERE relayed_at IS NULL;
CREATE INDEX switchyard_change_outbox_relayed ON switchyard_change_outbox (relayed_at)
    WHERE relayed_at IS NOT NULL;

-- The seed's trigger function, writing to the outbox instead of only notifying.
CREATE OR REPLACE FUNCTION notify_document_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rec jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        rec := to_jsonb(OLD);
    ELSE
        rec := to_jsonb(NEW);
    END IF;
    INSERT INTO switchyard_change_outbox (table_name, entity_id, operation, tenant_key, row_data)
    VALUES (TG_TABLE_NAME, coalesce(rec ->> 'id', ''), TG_OP, rec ->> 'tenant_key', rec);
    PERFORM pg_notify('switchyard_changes', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

-- Attaches the feed to a table (it needs an "id" column; "tenant_key" is optional).
-- Idempotent: calling it again replaces the trigger.
CREATE OR REPLACE FUNCTION install_notification_trigger_on_table(table_name text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    tbl regclass := table_name::regclass;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = tbl AND attname = 'id' AND attnum > 0 AND NOT attisdropped
    ) THEN
        RAISE EXCEPTION 'table % has no "id" column; the change feed needs one', tbl;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS switchyard_notify_change ON %s', tbl);
    EXECUTE format(
        'CREATE TRIGGER switchyard_notify_change AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION notify_document_change()', tbl);
END;
$$;

-- The tenant of one row, for the subscription check (tenant isolation):
-- present = false when the table or the row does not exist; tenant_key NULL when the table has no
-- tenant_key column (or the row's is NULL). ("found" would shadow PL/pgSQL's FOUND.)
CREATE OR REPLACE FUNCTION switchyard_entity_tenant(
    table_name text, entity_id text, OUT present boolean, OUT tenant_key text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    tbl regclass := to_regclass(table_name);
    id_type text;
    has_tenant boolean;
BEGIN
    present := false;
    IF tbl IS NULL THEN
        RETURN;
    END IF;
    SELECT format_type(a.atttypid, a.atttypmod) INTO id_type
    FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'id' AND a.attnum > 0 AND NOT a.attisdropped;
    IF id_type IS NULL THEN
        RETURN;
    END IF;
    SELECT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = tbl AND attname = 'tenant_key' AND attnum > 0 AND NOT attisdropped
    ) INTO has_tenant;
    BEGIN
        IF has_tenant THEN
            EXECUTE format('SELECT true, tenant_key::text FROM %s WHERE id = $1::%s', tbl, id_type)
                INTO present, tenant_key USING entity_id;
        ELSE
            EXECUTE format('SELECT true, NULL::text FROM %s WHERE id = $1::%s', tbl, id_type)
                INTO present, tenant_key USING entity_id;
        END IF;
    EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
        -- An id that cannot be of this table's id type names no row.
        present := false;
        tenant_key := NULL;
    END;
    present := coalesce(present, false);
END;
$$;
