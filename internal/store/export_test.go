package store

import "database/sql"

// PoolStats is the statistics of p's main connection pool.
func PoolStats(p *Postgres) sql.DBStats { return p.sqlDB.Stats() }
