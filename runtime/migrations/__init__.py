"""The store's schema migrations (Alembic), run by :meth:`runtime.store.Store.create_schema` and
``crossdock db upgrade``; ``env.py`` takes the connection it is handed and needs no alembic.ini."""
