"""Read models built from the event log: balances, history, lots with a burn
forecast, rejections, held events, and the settlement agenda of the tick.
Each can be dropped and rebuilt from zero (`accrual replay`); `accrual audit`
rebuilds them into scratch tables and compares."""
