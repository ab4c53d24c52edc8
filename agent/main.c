/* berthd's entry point: options, then the daemon (daemon.c) runs. */
#include "build-config.h"

int main(void);

int
main(void)
{
    return 0;
}
