// The error taxonomy lives in libsandbox's public header so that clients,
// the daemon and the agent share one definition.
#pragma once

#include "sandbox/result.h"
