use pyo3::prelude::*; #[pymodule] fn _gmprt(_m: &Bound<PyModule>) -> PyResult<()> { Ok(()) }
