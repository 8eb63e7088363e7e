// The same commit stamp as `imix` (IMIX_GIT_COMMIT), for the provenance of every grid row.
include!("../imix/build.rs");
